"""CA rotation requests declared on the Cluster document (``spec.rotation``): their shape.

::

    kind: Cluster
    metadata: {name: prod}             # or spec.cluster_name: prod
    spec:
      public_address: proxy.example.com:3080
      rotation:
      - {id: host-2026-12, type: host, mode: manual, phase: update_clients}
      - {id: user-q4, type: user, mode: auto, grace_period: 24h}

Each request names the CA type it rotates (user, host, db, jwt; never tls), its mode and, in
``manual`` mode, the phase the CA should be in now (init, update_clients, update_servers,
standby, rollback); an ``auto`` request takes a ``grace_period`` (auth moves on by itself, a
third of it per phase) and may say ``phase: rollback``. ``id`` is the committer's name for the
rotation: a new id starts a new one. Ids are unique, and there is one request per CA type.

:func:`rotation_request_problems` is what ``limen.api.validation`` adds to the CRD schema for
the kind Cluster; :func:`parse_requests` gives auth's reconciler
(``limen.auth.rotation_requests``) the requests of an already validated document. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from limen.api.durations import parse_duration
from limen.api.loader import FieldPath
from limen.errors import BadParameter

__all__ = ["MODES", "PHASES", "TYPES", "RotationRequest", "parse_requests",
           "rotation_request_problems"]

TYPES = ("user", "host", "db", "jwt")
"""The CA types a declared rotation may name (the tls CA does not rotate by phases)."""
MODES = ("manual", "auto")
PHASES = ("init", "update_clients", "update_servers", "standby", "rollback")
AUTO_PHASES = ("rollback",)
"""The only phase an ``auto`` request may declare (auth moves it through the others)."""
_FIELDS = ("id", "type", "mode", "grace_period", "phase")


@dataclass(frozen=True)
class RotationRequest:
    """One validated ``spec.rotation`` entry."""

    id: str
    type: str
    mode: str
    phase: str | None
    """The declared phase (None: an ``auto`` request left to move by itself)."""
    grace_period: timedelta

    @property
    def auto(self) -> bool:
        return self.mode == "auto"


def _entry_problems(index: int, entry: Any) -> Iterator[tuple[FieldPath, str]]:
    at: FieldPath = ("spec", "rotation", index)
    if not isinstance(entry, Mapping):
        yield at, "a rotation request is an object {id, type, mode, phase, grace_period}"
        return
    for key in entry:
        if key not in _FIELDS:
            yield (*at, str(key)), f"unknown field (known: {', '.join(_FIELDS)})"
    rid = entry.get("id")
    if not isinstance(rid, str) or not rid.strip():
        yield (*at, "id"), "required: a non-empty string naming this rotation"
    elif len(rid) > 128:
        yield (*at, "id"), "at most 128 characters"
    if entry.get("type") not in TYPES:
        why = " (the tls CA does not rotate by phases)" if entry.get("type") == "tls" else ""
        yield (*at, "type"), f"one of {', '.join(TYPES)}{why}"
    mode = entry.get("mode", "manual")
    if mode not in MODES:
        yield (*at, "mode"), f"one of {', '.join(MODES)}"
    phase = entry.get("phase")
    if phase is not None and phase not in PHASES:
        yield (*at, "phase"), f"one of {', '.join(PHASES)}"
    elif mode == "manual" and phase is None:
        yield (*at, "phase"), "required in manual mode: the phase the CA should be in now"
    elif mode == "auto" and phase is not None and phase not in AUTO_PHASES:
        yield (*at, "phase"), ("an auto request moves by itself: leave phase out, or give "
                               "rollback")
    grace = entry.get("grace_period")
    if grace is not None:
        try:
            parse_duration(str(grace))
        except BadParameter as err:
            yield (*at, "grace_period"), str(err)
    elif mode == "auto":
        yield (*at, "grace_period"), "required in auto mode (e.g. 24h)"


def rotation_request_problems(spec: Mapping[str, Any]) -> Iterator[tuple[FieldPath, str]]:
    """What is wrong with ``spec.rotation`` (nothing when absent)."""
    requests = spec.get("rotation")
    if requests is None:
        return
    if not isinstance(requests, list):
        yield ("spec", "rotation"), "a list of rotation requests"
        return
    ids: dict[str, int] = {}
    types: dict[str, int] = {}
    for index, entry in enumerate(requests):
        yield from _entry_problems(index, entry)
        if not isinstance(entry, Mapping):
            continue
        rid, ca_type = entry.get("id"), entry.get("type")
        if isinstance(rid, str) and rid in ids:
            yield ("spec", "rotation", index, "id"), f"id {rid!r} is used by request {ids[rid]}"
        elif isinstance(rid, str):
            ids[rid] = index
        if isinstance(ca_type, str) and ca_type in types:
            yield (("spec", "rotation", index, "type"),
                   f"one request per CA type: request {types[ca_type]} rotates {ca_type} too")
        elif isinstance(ca_type, str):
            types[ca_type] = index


def parse_requests(spec: Mapping[str, Any]) -> list[RotationRequest]:
    """The requests of a Cluster spec; :class:`BadParameter` naming the first problem (a
    document stored before this check, or written past validation)."""
    for path, reason in rotation_request_problems(spec):
        raise BadParameter(f"{'.'.join(str(p) for p in path)}: {reason}")
    found = []
    for entry in spec.get("rotation") or []:
        grace = entry.get("grace_period")
        found.append(RotationRequest(
            str(entry["id"]), str(entry["type"]), str(entry.get("mode", "manual")),
            entry.get("phase"), parse_duration(str(grace)) if grace else timedelta(0)))
    return found
