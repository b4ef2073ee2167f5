"""Auth's store of session recordings as users see it: which store holds them, each
recording's metadata, a summary row for listings, and the ``session`` rule decision for one
caller and one recording.

:func:`recording_store` chooses the store with the backend: ``DATA_DIR/log/recordings`` for
SQLite (``<id>.cast`` next to ``<id>.json``, the session's metadata written by the recorder:
``user``, ``login``, ``server_id``, ``server_hostname``, ``cluster``, ``start``, ``end``,
``incomplete``, and ``participants`` when known; see ``limen.recording.sink``), the shared
database for PostgreSQL (``limen.auth.recordings_postgres``), so that a recording uploaded
through one auth replica is read through any other. The decision evaluates the caller's
``session`` rules with that metadata (``limen.rbac.rule_context``): the ``access`` preset's
``where: contains(session.participants, user.metadata.name)`` lets a user read only the
sessions they took part in. Called by ``limen.auth.http.user`` and ``limen.auth.http.agents``
(and ``limen.cli.compose`` for the node agent in auth's process).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from limen.backend.base import Backend
from limen.backend.metered import unwrapped
from limen.ca.identity import Identity, SystemRole
from limen.rbac.decision import Decision, allow, deny
from limen.rbac.roleset import RoleSet
from limen.rbac.rule_context import rule_context, session_participants
from limen.recording.sink import (
    LocalDirectorySink,
    RecordingStore,
    directory_listing,
    directory_metadata,
)

__all__ = ["decide", "list_metadata", "read_metadata", "recording_store", "summary"]


def recording_store(backend: Backend, directory: Path) -> RecordingStore:
    """Where auth keeps recordings with ``backend``: its PostgreSQL database, shared by every
    auth replica, or else the local ``directory``."""
    backend = unwrapped(backend)  # the metered one of limen start is the same database
    # a PostgresBackend exists only once its module is loaded: a SQLite cluster never pays
    # for importing psycopg here
    if "limen.backend.postgres" in sys.modules:
        from limen.auth.recordings_postgres import PostgresRecordingStore
        from limen.backend.postgres import PostgresBackend

        if isinstance(backend, PostgresBackend):
            return PostgresRecordingStore(backend)
    return LocalDirectorySink(directory)


def read_metadata(directory: Path, session_id: str) -> dict[str, Any] | None:
    """The metadata of recording ``session_id`` (a checked id) in ``directory``, or None
    when there is none (blocking)."""
    return directory_metadata(directory, session_id)


def list_metadata(directory: Path) -> list[dict[str, Any]]:
    """The metadata of every recording in ``directory`` (blocking: run it in a thread)."""
    return directory_listing(directory)


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
