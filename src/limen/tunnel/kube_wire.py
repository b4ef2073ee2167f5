"""The first frame of a Kubernetes data connection, from the proxy to the kube agent.

After the proxy and the kube agent have authenticated each other with mutual TLS on the data
connection (:data:`limen.tunnel.protocol.KIND_KUBE`, ``MODE_TLS``), the proxy sends one
:class:`KubeConnect` (a 4-byte big-endian length, then compact JSON) and then relays the
client's HTTP/1.1 byte for byte::

    {"cluster": "prod", "user_cert": "-----BEGIN CERTIFICATE-----...",
     "client_addr": "10.0.0.7:53211", "session_id": "6f1c..."}

``user_cert`` is the certificate the client presented to the proxy (PEM): the agent verifies
it again (user CA, cluster, expiry, ``usage: kube``, the cluster it is scoped to) and decides
every request itself. Pure code, called by the proxy's kube front and the kube agent;
malformed frames raise :class:`~limen.errors.BadParameter`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

from limen.errors import BadParameter

__all__ = ["MAX_CONNECT", "KubeConnect", "connect_length", "decode_connect", "encode_connect"]

MAX_CONNECT = 64 * 1024
_HEADER = struct.Struct(">I")
_FIELDS = ("cluster", "user_cert", "client_addr", "session_id")


@dataclass(frozen=True)
class KubeConnect:
    cluster: str
    """Name of the kube Resource the connection is for."""
    user_cert: str
    """The client's certificate (PEM), verified again by the agent."""
    client_addr: str = ""
    session_id: str = ""


def encode_connect(request: KubeConnect) -> bytes:
    payload = json.dumps(asdict(request), separators=(",", ":")).encode()
    if len(payload) > MAX_CONNECT:
        raise BadParameter("kube connection request too large")
    return _HEADER.pack(len(payload)) + payload


def connect_length(header: bytes) -> int:
    """The payload length announced by the 4-byte ``header``."""
    if len(header) != _HEADER.size:
        raise BadParameter("truncated kube connection request")
    (size,) = _HEADER.unpack(header)
    if not 0 < size <= MAX_CONNECT:
        raise BadParameter(f"kube connection request of {size} bytes")
    return int(size)


def decode_connect(payload: bytes) -> KubeConnect:
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("kube connection request is not JSON") from None
    if not isinstance(doc, dict):
        raise BadParameter("kube connection request must be a JSON object")
    values: dict[str, str] = {}
    for name in _FIELDS:
        value = doc.get(name, "")
        if not isinstance(value, str):
            raise BadParameter(f"kube connection request field {name!r} must be a string")
        values[name] = value
    if not values["cluster"] or not values["user_cert"]:
        raise BadParameter("kube connection request needs cluster and user_cert")
    return KubeConnect(**values)
