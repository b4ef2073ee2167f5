"""PostgreSQL cancel keys, mapped per session.

A PostgreSQL server gives each session a BackendKeyData (process id, secret); a client
cancels a running query by sending both on a new, unauthenticated connection. Through Limen
the client never sees the database's key: the proxy gives it a fresh random one and keeps
``client key -> (the session, the database's key)`` while the session lives. A cancel request
is forwarded only for a key the proxy issued, to the session it was issued for, so a key
learned elsewhere (``pg_stat_activity`` shows process ids) cancels nothing, and a key of
another user's session sent over an authenticated connection is refused. The cancel of a
session forwarded to a trusted leaf cluster goes to that leaf's proxy (``leaf``), which
checks it again before its db agent sends it to the database. Called by
:mod:`limen.proxy.db.postgres_front`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

__all__ = ["CancelKeys", "CancelTarget"]


@dataclass(frozen=True)
class CancelTarget:
    service: str
    username: str
    user_cert: str
    db_user: str
    session_id: str
    upstream_pid: int
    upstream_secret: int
    leaf: str = ""
    """The trusted leaf cluster whose proxy serves the session ("": this cluster's)."""


class CancelKeys:
    def __init__(self) -> None:
        self._keys: dict[tuple[int, int], CancelTarget] = {}

    def issue(self, target: CancelTarget) -> tuple[int, int]:
        """A fresh random (pid, secret) the client will cancel with."""
        while True:
            key = (secrets.randbelow(2**31 - 1) + 1, secrets.randbits(32))
            if key not in self._keys:
                self._keys[key] = target
                return key

    def find(self, pid: int, secret: int) -> CancelTarget | None:
        return self._keys.get((pid, secret))

    def release(self, key: tuple[int, int]) -> None:
        self._keys.pop(key, None)

    def __len__(self) -> int:
        return len(self._keys)
