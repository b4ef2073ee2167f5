"""The fields a rule's ``where`` reads, built from the caller and the object asked about.

``rule_context(user, roles, traits, session=meta)`` gives the flat mapping that
:meth:`limen.api.predicates.Predicate.evaluate` reads: ``user.metadata.name``,
``user.spec.roles``, ``user.spec.traits.NAME``, and for a recorded session the ``session.*``
fields from its metadata (the ``.json`` sidecar of a recording: ``user``, ``login``,
``server_id``, ... and ``participants`` when the recorder wrote them; a session without a
participant list has its user as the only participant).

Called by auth's recordings endpoints (``limen.auth.http.user``) and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from limen.api.predicates import TRAITS_PREFIX

__all__ = ["rule_context", "session_fields", "session_participants"]

_SESSION_FIELDS = {"user": "session.user", "login": "session.login",
                   "cluster": "session.cluster", "server_id": "session.server_id",
                   "server_hostname": "session.server_hostname", "session_id": "session.id"}


def session_participants(meta: Mapping[str, Any]) -> tuple[str, ...]:
    """The session's participants: its ``participants`` list, else its user."""
    found = meta.get("participants")
    if isinstance(found, list) and all(isinstance(p, str) for p in found) and found:
        return tuple(found)
    user = meta.get("user")
    return (user,) if isinstance(user, str) and user else ()


def session_fields(meta: Mapping[str, Any]) -> dict[str, str | tuple[str, ...]]:
    """``session.*`` fields of a recording's metadata (missing or odd values: empty)."""
    out: dict[str, str | tuple[str, ...]] = {
        name: meta[key] for key, name in _SESSION_FIELDS.items()
        if isinstance(meta.get(key), str)}
    out["session.participants"] = session_participants(meta)
    return out


def rule_context(user: str, roles: Sequence[str],
                 traits: Mapping[str, Sequence[str]] | None = None, *,
                 session: Mapping[str, Any] | None = None) -> dict[str, str | tuple[str, ...]]:
    """The ``where`` fields for ``user`` (with its roles and traits), about ``session``."""
    out: dict[str, str | tuple[str, ...]] = {
        "user.metadata.name": user, "user.spec.roles": tuple(roles)}
    for name, values in (traits or {}).items():
        out[TRAITS_PREFIX + name] = (values,) if isinstance(values, str) else tuple(values)
    if session is not None:
        out.update(session_fields(session))
    return out
