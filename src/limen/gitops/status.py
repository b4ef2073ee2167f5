"""The Git sync's status: which commit is live, and how the last attempt went.

Stored as JSON in the backend under ``/gitops/status``
(``limen.auth.store_keys.GITOPS_STATUS_KEY``), so it survives restarts and the auth API serves
it to ``lmctl gitops status``::

    {"source": "examples/gitops", "mode": "git", "branch": "main", "path": "examples/gitops",
     "interval_seconds": 15.0,
     "live": {"sha": "3f2a...", "author": "Ana <ana@example.com>", "time": "<commit time>",
              "message": "Give dev ubuntu", "applied_at": "...", "summary": "1 updated, ..."},
     "last_attempt": {"sha": "9c1e...", "author": "...", "message": "...", "time": "...",
                      "ok": false, "errors": ["roles/dev.yaml[0] (line 9) spec...: ..."]},
     "reviews": [{"file": "reviews/<id>.yaml[0]", "commit": "...", "ok": false,
                  "request_id": "...", "state": "APPROVED", "merger": "Bob <bob@...>",
                  "user": "bob", "reason": "bob may not review ..."}]}

``live`` is null until a revision has been applied; a rejected revision changes only
``last_attempt``. ``reviews`` are the outcomes of the live revision's access request reviews
(``limen.gitops.reviews``), each decided once. With several auth replicas, ``leader`` names
the lease holder that wrote it (only the leader writes it: ``save_status`` takes the lease's
conditions). Called by ``limen.gitops.sync``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from limen.auth.store_keys import GITOPS_STATUS_KEY
from limen.backend.base import Backend, Condition, Put
from limen.gitops.repository import Revision

__all__ = ["Attempt", "LiveRevision", "ReviewOutcome", "SyncStatus", "load_reviews",
           "load_status", "save_status"]


@dataclass(frozen=True)
class LiveRevision:
    revision: Revision
    applied_at: str
    summary: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.revision.to_dict(), "applied_at": self.applied_at,
                "summary": self.summary}


@dataclass(frozen=True)
class Attempt:
    revision: Revision | None
    """None when the source could not even be read (fetch failed)."""
    time: str
    ok: bool
    errors: tuple[str, ...] = ()
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        rev = self.revision.to_dict() if self.revision else {"sha": None}
        out: dict[str, Any] = {**{k: v for k, v in rev.items() if k != "time"},
                               "commit_time": rev.get("time"), "time": self.time,
                               "ok": self.ok, "errors": list(self.errors)}
        if self.summary:
            out["summary"] = self.summary
        return out


@dataclass(frozen=True)
class ReviewOutcome:
    """How one review document was decided (kept in the sync status)."""

    file: str
    """``reviews/<id>.yaml[0]``."""
    commit: str
    """The commit that merged it (the revision's, when it could not be found)."""
    ok: bool
    request_id: str = ""
    state: str = ""
    merger: str = ""
    """``Name <email>`` of who merged it."""
    user: str = ""
    """The Limen user that merger is."""
    reason: str = ""
    """Why it was refused."""

    @property
    def key(self) -> tuple[str, str]:
        return self.file, self.commit

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "commit": self.commit, "ok": self.ok,
                "request_id": self.request_id, "state": self.state, "merger": self.merger,
                "user": self.user, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReviewOutcome:
        return cls(str(data["file"]), str(data["commit"]), bool(data.get("ok")),
                   str(data.get("request_id") or ""), str(data.get("state") or ""),
                   str(data.get("merger") or ""), str(data.get("user") or ""),
                   str(data.get("reason") or ""))

    def describe(self) -> str:
        what = f"{self.state.lower() or 'review'} of {self.request_id or 'a request'}"
        by = f" merged by {self.merger}" if self.merger else ""
        return f"{self.file}: {what}{by} (commit {self.commit[:12]})" + (
            "" if self.ok else f" refused: {self.reason}")


@dataclass(frozen=True)
class SyncStatus:
    source: str
    mode: str
    branch: str
    path: str
    interval_seconds: float
    live: LiveRevision | None = None
    last_attempt: Attempt | None = None
    leader: str = ""
    """The Git sync's lease holder that wrote this status (empty: no lease)."""
    reviews: tuple[ReviewOutcome, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source, "mode": self.mode, "branch": self.branch, "path": self.path,
            "interval_seconds": self.interval_seconds,
            "live": self.live.to_dict() if self.live else None,
            "last_attempt": self.last_attempt.to_dict() if self.last_attempt else None,
        }
        if self.leader:
            out["leader"] = self.leader
        if self.reviews:
            out["reviews"] = [r.to_dict() for r in self.reviews]
        return out


def _revision(data: dict[str, Any], time_key: str) -> Revision:
    return Revision(sha=str(data.get("sha") or ""), author=str(data.get("author") or ""),
                    time=str(data.get(time_key) or ""), message=str(data.get("message") or ""),
                    content_hash=str(data.get("content_hash") or ""))


async def load_status(backend: Backend) -> tuple[LiveRevision | None, Attempt | None]:
    """The live revision and last attempt recorded by a previous run (None, None if none)."""
    item = await backend.get(GITOPS_STATUS_KEY)
    if item is None:
        return None, None
    try:
        data = json.loads(item.value)
        live_data = data.get("live")
        live = (LiveRevision(_revision(live_data, "time"), str(live_data.get("applied_at", "")),
                             str(live_data.get("summary", ""))) if live_data else None)
        last_data = data.get("last_attempt")
        last = (Attempt(_revision(last_data, "commit_time") if last_data.get("sha") else None,
                        str(last_data.get("time", "")), bool(last_data.get("ok")),
                        tuple(str(e) for e in last_data.get("errors") or ()),
                        str(last_data.get("summary", ""))) if last_data else None)
    except (ValueError, AttributeError, TypeError):
        return None, None  # unreadable: the next attempt writes a fresh status
    return live, last


async def load_reviews(backend: Backend) -> tuple[ReviewOutcome, ...]:
    """The review outcomes recorded by a previous run (none when unreadable)."""
    item = await backend.get(GITOPS_STATUS_KEY)
    if item is None:
        return ()
    try:
        return tuple(ReviewOutcome.from_dict(r) for r in json.loads(item.value).get("reviews")
                     or ())
    except (ValueError, AttributeError, TypeError, KeyError):
        return ()


async def save_status(backend: Backend, status: SyncStatus,
                      fence: Sequence[Condition] = ()) -> None:
    """Record ``status``; with ``fence``, only while those conditions hold (the lease)."""
    value = json.dumps(status.to_dict(), sort_keys=True).encode()
    if fence:
        await backend.atomic(fence, [Put(GITOPS_STATUS_KEY, value)])
    else:
        await backend.put(GITOPS_STATUS_KEY, value)
