"""The little of Kubernetes' protobuf encoding the emulator reads: a SelfSubjectAccessReview
that ``kubectl auth can-i`` sends as ``application/vnd.kubernetes.protobuf``.

Used by ``apiserver.py`` (``reviews.py`` then answers in JSON, which the client accepts).
The body is the magic ``k8s\\x00`` and a ``runtime.Unknown`` whose field 2 holds the object;
fields are decoded by number as in ``k8s.io/api/authorization/v1/generated.proto``.
Anything else sent as protobuf is still answered 415 (clients retry with JSON).
"""

from __future__ import annotations

from typing import Any

from .errors import ApiError

__all__ = ["decode_access_review"]

_MAGIC = b"k8s\x00"
_RESOURCE_FIELDS = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}
_NON_RESOURCE_FIELDS = {1: "path", 2: "verb"}


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _fields(data: bytes) -> dict[int, list[bytes]]:
    """The length-delimited fields of a message by number (varints and fixed ones skipped)."""
    fields: dict[int, list[bytes]] = {}
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, position = _varint(data, position)
        elif wire == 1:
            position += 8
        elif wire == 5:
            position += 4
        elif wire == 2:
            size, position = _varint(data, position)
            fields.setdefault(number, []).append(data[position : position + size])
            position += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return fields


def _strings(data: bytes, names: dict[int, str]) -> dict[str, str]:
    fields = _fields(data)
    return {names[n]: v[0].decode() for n, v in fields.items() if n in names}


def decode_access_review(body: bytes) -> dict[str, Any]:
    """The review as the JSON object it encodes (``spec`` only)."""
    try:
        if not body.startswith(_MAGIC):
            raise ValueError("no protobuf magic")
        unknown = _fields(body[len(_MAGIC) :])
        review = _fields(unknown[2][0])
        spec = _fields(review[2][0]) if 2 in review else {}
        doc: dict[str, Any] = {}
        if 1 in spec:
            doc["resourceAttributes"] = _strings(spec[1][0], _RESOURCE_FIELDS)
        if 2 in spec:
            doc["nonResourceAttributes"] = _strings(spec[2][0], _NON_RESOURCE_FIELDS)
    except (ValueError, KeyError, IndexError, UnicodeDecodeError) as e:
        raise ApiError.bad_request(f"the body of the request could not be decoded: {e}") from e
    return {"spec": doc}
