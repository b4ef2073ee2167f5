"""Locks on the web UI: a locked user (or one of their roles) gets no answer to any web call of
an existing web session, and their open web terminals end.

The proxy's one lock view is the SSH front's (``ClusterView.locks``: auth's locks, read again
every half second); this module only asks it, with the web session's user and roles.
:meth:`WebLocks.check` raises :class:`~limen.services.locks.Locked` (``locked: <message>``);
:meth:`WebLocks.watch` returns the refusal once a lock targets an open terminal's session:
checked every :data:`STRICT_INTERVAL` seconds when the user's roles say ``lock: strict``
(at once, within the view's half second), every :data:`BEST_EFFORT_INTERVAL` otherwise (the
next check). New logins are refused by auth itself (the login certificate is not issued).
Used by ``limen.proxy.webui.mount`` (the middleware) and ``limen.proxy.webui.terminal``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from limen.api.resources import Resource
from limen.errors import LimenError
from limen.proxy.webui.sessions import WebSession
from limen.rbac.checker import AccessChecker
from limen.services.locks import Locked, LockView

__all__ = ["BEST_EFFORT_INTERVAL", "STRICT_INTERVAL", "WebLocks"]

log = logging.getLogger(__name__)

STRICT_INTERVAL = 0.5
BEST_EFFORT_INTERVAL = 2.0
LocksSource = Callable[[], Awaitable[LockView]]
RolesSource = Callable[[], Awaitable[Mapping[str, Resource]]]


class WebLocks:
    def __init__(self, locks: LocksSource, roles: RolesSource, *,
                 strict_interval: float = STRICT_INTERVAL,
                 best_effort_interval: float = BEST_EFFORT_INTERVAL) -> None:
        self._locks, self._roles = locks, roles
        self.strict_interval, self.best_effort_interval = strict_interval, best_effort_interval

    async def check(self, session: WebSession) -> None:
        """Raise :class:`Locked` when a lock in force targets the session's user or roles."""
        (await self._locks()).check_names(session.user, session.roles)

    async def mode(self, session: WebSession) -> str:
        """``strict`` or ``best_effort``: the ``lock`` option merged over the user's roles
        (``strict`` when they cannot be read: the terminal is then checked most often)."""
        try:
            checker = AccessChecker.for_user(session.user, session.roles, None,
                                             await self._roles())
        except (LimenError, OSError) as err:
            log.warning("web locks: cannot read the roles of %s: %s", session.user, err)
            return "strict"
        return "strict" if checker.roles.options.lock == "strict" else "best_effort"

    async def watch(self, session: WebSession, mode: str) -> Locked:
        """Returns the refusal once a lock targets ``session`` (runs until cancelled)."""
        interval = self.strict_interval if mode == "strict" else self.best_effort_interval
        while True:
            try:
                await self.check(session)
            except Locked as err:
                return err
            except (LimenError, OSError) as err:  # auth unreachable: the last view stays
                log.info("web locks: cannot check the locks of %s: %s", session.user, err)
            await asyncio.sleep(interval)  # the next periodic check
