"""Auth's store of session recordings as users see it: each recording's metadata, a summary
row for listings, and the ``session`` rule decision for one caller and one recording.

``DATA_DIR/log/recordings/<id>.cast`` sits next to ``<id>.json``, the session's metadata
written by the recorder (``user``, ``login``, ``server_id``, ``server_hostname``,
``cluster``, ``start``, ``end``, ``incomplete``, and ``participants`` when known; see
``limen.recording.sink``). The decision evaluates the caller's ``session`` rules with that
metadata (``limen.rbac.rule_context``): the ``access`` preset's
``where: contains(session.participants, user.metadata.name)`` lets a user read only the
sessions they took part in. Called by ``limen.auth.http.user``.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from limen.ca.identity import Identity, SystemRole
from limen.rbac.decision import Decision, allow, deny
from limen.rbac.roleset import RoleSet
from limen.rbac.rule_context import rule_context, session_participants
from limen.recording.writer import SESSION_ID_PATTERN

__all__ = ["decide", "list_metadata", "read_metadata", "summary"]


def _sidecar(directory: Path, session_id: str) -> dict[str, Any]:
    path = directory / f"{session_id}.json"
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        found = {}
    meta = dict(found) if isinstance(found, dict) else {}
    meta["session_id"] = session_id
    return meta


def read_metadata(directory: Path, session_id: str) -> dict[str, Any] | None:
    """The metadata of recording ``session_id`` (a checked id), or None when there is none."""
    if not (directory / f"{session_id}.cast").is_file():
        return None
    return _sidecar(directory, session_id)


def list_metadata(directory: Path) -> list[dict[str, Any]]:
    """The metadata of every stored recording (blocking: run it in a thread)."""
    if not directory.is_dir():
        return []
    return [_sidecar(directory, path.name.removesuffix(".cast"))
            for path in sorted(directory.glob("*.cast"))
            if SESSION_ID_PATTERN.match(path.name.removesuffix(".cast"))]


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def summary(meta: dict[str, Any]) -> dict[str, Any]:
    """One row of ``GET /v1/recordings``: id, who, where, when, how long."""
    start, end = _time(meta.get("start")), _time(meta.get("end"))
    duration = round((end - start).total_seconds(), 3) if start and end else None
    return {"session_id": meta["session_id"], "user": meta.get("user") or "",
            "participants": list(session_participants(meta)),
            "node": meta.get("server_hostname") or meta.get("server_id") or "",
            "server_id": meta.get("server_id") or "", "login": meta.get("login") or "",
            "cluster": meta.get("cluster") or "", "start": meta.get("start") or "",
            "end": meta.get("end") or "", "duration_seconds": duration,
            "incomplete": bool(meta.get("incomplete"))}


def decide(identity: Identity, role_set: RoleSet | None, verb: str,
           meta: dict[str, Any] | None) -> Decision:
    """May ``identity`` ``verb`` (list, read) the recording with ``meta``? With ``meta``
    None: may it do so for some recording (the listing's and a missing id's question)."""
    if identity.system_role is SystemRole.ADMIN:
        return allow(None, "system", "the admin identity reads every recording")
    if identity.system_role is not None or role_set is None:
        return deny(None, "system", f"{identity.system_role or 'this caller'} may not read "
                    "session recordings")
    if meta is None:
        return role_set.check_rule_possible("session", verb)
    context = rule_context(identity.username, identity.roles, identity.traits, session=meta)
    return role_set.check_rule("session", verb, context)
