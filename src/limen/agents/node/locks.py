"""``lock: strict``: open connections whose access was taken away are ended.

Roles change while sessions run (a Git commit, ``lmctl``, the operator). New connections see the
change at once; for open ones, every ``interval`` seconds the node asks its access policy again
for each connection whose options at login said ``lock: strict``, and disconnects those now
denied, with the reason and an ``access.denied`` audit event. Connections under
``best_effort`` (or no lock) are kept, as Teleport does. Started by ``NodeSSHServer.start``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from limen.errors import LimenError

if TYPE_CHECKING:
    from limen.agents.node.connection import NodeConnectionHandler
    from limen.agents.node.context import NodeContext

__all__ = ["enforce_strict_locks", "recheck_once"]

log = logging.getLogger(__name__)


async def recheck_once(context: NodeContext, handlers: Iterable[NodeConnectionHandler]) -> int:
    """Disconnect every strict-lock connection its roles no longer allow; returns how many."""
    ended = 0
    for handler in list(handlers):
        state = handler.state
        if state.verified is None or not state.login or state.options is None \
                or state.options.lock != "strict":
            continue
        try:
            decision = await context.access.check_ssh(state.identity, state.login)
        except LimenError as err:
            log.warning("lock: cannot re-check %s: %s", state.user, err)
            continue
        if decision.allowed:
            continue
        context.audit.emit("access.denied", user=state.user, **state.fields(),
                           reason=f"access removed while connected: {decision.reason}",
                           role=decision.role, rule=decision.rule, lock="strict")
        handler.disconnect(f"your access to this node was removed ({decision.reason})")
        ended += 1
    return ended


async def enforce_strict_locks(context: NodeContext, handlers: set[NodeConnectionHandler],
                               interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await recheck_once(context, handlers)
