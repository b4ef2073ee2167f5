"""The proxy's table of outstanding data-connection nonces: single use, short-lived, bound.

Every nonce is issued for one purpose (a dial sent to one agent, or an agent's request to reach
auth) and recorded with the host id of the agent it was given to. A data connection presenting
it is paired with that purpose once; an unknown, expired or already used nonce pairs with
nothing. The nonce is a bearer secret for ~10 s, sent only over the agent's encrypted control
connection; what it unlocks is a raw byte pipe whose payload is itself authenticated end to end
(SSH to the node, mTLS to auth), so a stolen nonce cannot impersonate either end.

Called by :mod:`limen.tunnel.server`; pure (injectable clock), unit-tested.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from limen.tunnel.protocol import new_nonce

__all__ = ["NONCE_TTL", "NonceEntry", "NonceTable"]

NONCE_TTL = 10.0
"""Seconds a nonce stays valid."""


@dataclass(frozen=True)
class NonceEntry:
    nonce: str
    host_id: str
    """The agent the nonce was given to."""
    purpose: str
    """``dial`` (proxy asked the agent) or ``auth`` (agent asked for auth)."""
    expires: float


class NonceTable:
    def __init__(self, ttl: float = NONCE_TTL, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, NonceEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def issue(self, host_id: str, purpose: str) -> NonceEntry:
        self.sweep()
        entry = NonceEntry(new_nonce(), host_id, purpose, self._clock() + self.ttl)
        self._entries[entry.nonce] = entry
        return entry

    def take(self, nonce: str) -> NonceEntry | None:
        """The entry for ``nonce`` if it is live; it is removed either way (single use)."""
        entry = self._entries.pop(nonce, None)
        if entry is None or entry.expires <= self._clock():
            return None
        return entry

    def discard(self, nonce: str) -> None:
        self._entries.pop(nonce, None)

    def discard_host(self, host_id: str) -> None:
        """Forget every nonce given to an agent (it disconnected)."""
        for nonce in [n for n, e in self._entries.items() if e.host_id == host_id]:
            del self._entries[nonce]

    def sweep(self) -> None:
        now = self._clock()
        for nonce in [n for n, e in self._entries.items() if e.expires <= now]:
            del self._entries[nonce]
