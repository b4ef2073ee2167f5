"""The ``AccessRequest`` kind: a user's request for roles, its reviews and its state.

Stored by auth under ``Kind.ACCESS_REQUEST`` (an internal kind, never declared in Git), named
by a random UUID. The whole record lives in ``spec``::

    {user, roles: [...], reason, state: PENDING|APPROVED|DENIED|EXPIRED,
     reviews: [{author, state: APPROVED|DENIED, reason, time, commit?}], created, expires}

A review merged in Git (``limen.gitops.reviews``) records the commit that brought it.

Times are ISO 8601 in UTC. A request past ``expires`` is EXPIRED whatever its stored state
(:meth:`AccessRequest.state_at`). Pure; used by ``limen.auth.access_requests`` (the rules),
the auth API and the clients (``lmsh request``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from limen.api.resources import Kind, Resource
from limen.errors import BadParameter

__all__ = [
    "AccessRequest",
    "RequestState",
    "Review",
    "check_reason",
    "check_request_id",
    "new_request_id",
]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
MAX_REASON = 1024
"""Longest reason a request or a review may carry (characters)."""


class RequestState(StrEnum):
    PENDING = "PENDING"
    APPROVED = "APPROVED"
    DENIED = "DENIED"
    EXPIRED = "EXPIRED"


def new_request_id() -> str:
    """A fresh request id: a random (version 4) UUID."""
    return str(uuid.uuid4())


def check_request_id(text: str) -> str:
    """``text`` when it is a request id (a lower-case random UUID), else BadParameter."""
    if not isinstance(text, str) or not _UUID.fullmatch(text):
        raise BadParameter(f"{str(text)[:80]!r} is not an access request id (a UUID)")
    return text


def check_reason(text: str | None) -> str:
    reason = (text or "").strip()
    if len(reason) > MAX_REASON or any(ord(c) < 32 and c not in "\t" for c in reason):
        raise BadParameter(f"the reason must be one line of at most {MAX_REASON} characters")
    return reason


@dataclass(frozen=True)
class Review:
    author: str
    state: RequestState
    """APPROVED or DENIED."""
    reason: str
    time: str
    commit: str = ""
    """The Git commit that merged this review (empty: reviewed by command)."""

    def to_json(self) -> dict[str, str]:
        out = {"author": self.author, "state": self.state.value, "reason": self.reason,
               "time": self.time}
        if self.commit:
            out["commit"] = self.commit
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Review:
        return cls(str(data["author"]), RequestState(data["state"]), str(data.get("reason", "")),
                   str(data["time"]), str(data.get("commit") or ""))


@dataclass(frozen=True)
class AccessRequest:
    id: str
    user: str
    roles: tuple[str, ...]
    reason: str
    state: RequestState
    created: datetime
    expires: datetime
    reviews: tuple[Review, ...] = field(default=())
    revision: int = 0
    """The store revision this record was read at (compare-and-swap on update)."""

    def state_at(self, now: datetime) -> RequestState:
        """The state at ``now``: a pending or approved request past its expiry has expired."""
        if self.state in (RequestState.PENDING, RequestState.APPROVED) and now >= self.expires:
            return RequestState.EXPIRED
        return self.state

    def with_state(self, state: RequestState, review: Review | None = None) -> AccessRequest:
        reviews = self.reviews if review is None else (*self.reviews, review)
        return replace(self, state=state, reviews=reviews)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "roles": list(self.roles),
                "reason": self.reason, "state": self.state.value,
                "reviews": [r.to_json() for r in self.reviews],
                "created": self.created.isoformat(), "expires": self.expires.isoformat()}

    def to_resource(self) -> Resource:
        spec = self.to_json()
        del spec["id"]
        return Resource(Kind.ACCESS_REQUEST, self.id, spec=spec, revision=self.revision)

    @classmethod
    def from_resource(cls, resource: Resource) -> AccessRequest:
        spec = resource.spec
        try:
            return cls(
                id=resource.name, user=str(spec["user"]),
                roles=tuple(str(r) for r in spec["roles"]), reason=str(spec.get("reason", "")),
                state=RequestState(spec["state"]),
                created=datetime.fromisoformat(spec["created"]),
                expires=datetime.fromisoformat(spec["expires"]),
                reviews=tuple(Review.from_json(r) for r in spec.get("reviews") or []),
                revision=resource.revision)
        except (KeyError, TypeError, ValueError) as err:
            raise BadParameter(f"access request {resource.name} is malformed: {err}") from None
