"""Who may request which roles, and who may review such requests (Teleport's access requests).

A role's ``allow.request: {roles: [...], max_duration: 1h}`` lets its holders request those
roles for a while; ``allow.review_requests: {roles: [...]}`` lets its holders approve or deny
requests for them. The ``deny`` side has the same fields (``max_duration`` aside) and wins.
Role names are literals, globs with ``*`` or ``^...$`` regular expressions, as Teleport's.

- :func:`check_request`: every requested role must be allowed by some role of the requester
  and denied by none; the request lasts the smallest ``max_duration`` among the roles that
  allow it (``None`` when none sets one: the caller caps it by the session TTL).
- :func:`check_review`: every requested role must be covered by the ``review_requests`` of
  one of the reviewer's roles and denied by none.

A pattern that does not compile grants nothing on the allow side and denies everything on the
deny side (fail closed), like a broken role in :mod:`limen.rbac.role`. Pure; called by
``limen.auth.access_requests``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from limen.api.durations import parse_duration
from limen.api.resources import Kind, Resource
from limen.errors import BadParameter
from limen.rbac.decision import Decision, allow, deny
from limen.rbac.labels import ValuePattern, compile_value

__all__ = ["RequestDecision", "check_request", "check_review"]

REQUEST = "request"
REVIEW = "review_requests"


@dataclass(frozen=True)
class RequestDecision:
    """The answer of :func:`check_request`."""

    decision: Decision
    max_duration: timedelta | None = None
    """The smallest ``max_duration`` among the roles that allow the request (None: unset)."""

    @property
    def allowed(self) -> bool:
        return self.decision.allowed


@dataclass(frozen=True)
class _Patterns:
    role: str
    patterns: tuple[ValuePattern, ...]
    broken: bool = False
    max_duration: timedelta | None = None

    def matches(self, name: str) -> bool:
        return any(p.matches(name) for p in self.patterns)


def _section(role: Resource, side: str, field: str) -> _Patterns:
    conditions = role.spec.get(side)
    raw = conditions.get(field) if isinstance(conditions, Mapping) else None
    if raw is None:
        return _Patterns(role.name, ())
    try:
        if not isinstance(raw, Mapping):
            raise BadParameter(f"{side}.{field} must be a map")
        names = raw.get("roles") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadParameter(f"{side}.{field}.roles must be a list of strings")
        limit = raw.get("max_duration")
        duration = parse_duration(limit) if side == "allow" and limit is not None else None
        return _Patterns(role.name, tuple(compile_value(n) for n in names),
                         max_duration=duration)
    except BadParameter:
        return _Patterns(role.name, (), broken=True)


def _roles(roles: Sequence[Resource]) -> list[Resource]:
    return sorted((r for r in roles if r.kind is Kind.ROLE), key=lambda r: r.name)


def _denied(roles: list[Resource], field: str, name: str) -> Decision | None:
    for role in roles:
        denied = _section(role, "deny", field)
        if denied.broken:
            return deny(role.name, f"deny.{field}",
                        f"role {role.name!r} has an invalid deny.{field}: it denies everything")
        if denied.matches(name):
            return deny(role.name, f"deny.{field}.roles",
                        f"role {role.name!r} denies {_verb(field)} role {name!r}")
    return None


def _verb(field: str) -> str:
    return "requesting" if field == REQUEST else "reviewing requests for"


def _check(roles: Sequence[Resource], field: str, requested: Sequence[str]
           ) -> tuple[Decision, list[_Patterns]]:
    if not requested:
        return deny(None, f"allow.{field}", "no role was requested"), []
    ordered = _roles(roles)
    granting: list[_Patterns] = []
    for name in requested:
        refused = _denied(ordered, field, name)
        if refused is not None:
            return refused, []
        matching = [p for r in ordered if (p := _section(r, "allow", field)).matches(name)]
        if not matching:
            return deny(None, f"allow.{field}.roles",
                        f"no role allows {_verb(field)} role {name!r}"), []
        granting.extend(matching)
    names = sorted({p.role for p in granting})
    return allow(names[0] if len(names) == 1 else None, f"allow.{field}.roles",
                 f"{_verb(field)} {', '.join(requested)} allowed by {', '.join(names)}"), granting


def check_request(roles: Sequence[Resource], requested: Sequence[str]) -> RequestDecision:
    """May a user holding ``roles`` request every role in ``requested``?"""
    decision, granting = _check(roles, REQUEST, requested)
    if not decision.allowed:
        return RequestDecision(decision)
    limits = [p.max_duration for p in granting if p.max_duration is not None]
    return RequestDecision(decision, min(limits) if limits else None)


def check_review(roles: Sequence[Resource], requested: Sequence[str]) -> Decision:
    """May a user holding ``roles`` approve or deny a request for every role in ``requested``?"""
    return _check(roles, REVIEW, requested)[0]

