"""What automatic user provisioning changed in a database: :class:`Change`, returned by the
provisioners (:mod:`limen.agents.db.provisioning_postgres`,
:mod:`limen.agents.db.provisioning_mysql`) and written into the ``db.user.provisioned`` /
``db.user.deactivated`` audit events by :mod:`limen.agents.db.provisioning`; and
:func:`sessions_left`, how both provisioners ask the server whether a user still has sessions
before they disable it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["SETTLE_SECONDS", "Change", "sessions_left"]

SETTLE_SECONDS = 2.0
"""How long a deactivation waits for the user's sessions on the server to reach zero."""
_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Change:
    created: bool = False
    """The database user did not exist and was created."""
    granted: tuple[str, ...] = ()
    """Database roles granted now."""
    revoked: tuple[str, ...] = ()
    """Database roles revoked now (granted earlier, no longer in the user's db_roles)."""
    in_use: int = 0
    """Sessions of the user the server still had (another db agent's, or a direct login):
    the user was left enabled, nothing revoked."""


async def sessions_left(count: Callable[[], Awaitable[int]],
                        settle: float = SETTLE_SECONDS) -> int:
    """The user's sessions on the server by ``count`` (which leaves out the asking
    connection), asked again until it is zero or ``settle`` seconds have passed: the session
    that just ended through this agent leaves the server's session list when its server
    process exits, a moment after the agent closed it. What another db agent serving the same
    server holds stays, and keeps the user enabled: each agent only counts its own sessions."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle
    while True:
        left = await count()
        if left == 0 or loop.time() >= deadline:
            return left
        await asyncio.sleep(_POLL_SECONDS)
