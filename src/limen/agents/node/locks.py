"""Open connections whose access was taken away, or that a lock now targets, are ended.

Roles change while sessions run (a Git commit, ``lmctl``, the operator) and locks appear
(``lmctl lock``, a Lock in Git or as a CR). New connections see either at once; for open ones
the node asks its access policy again (RBAC, then the lock view of ``limen.services.locks``):

* at once when the lock view changes: connections whose options at login said ``lock: strict``
  and that a lock now targets are ended (within the lock view's delivery, well under 2 s);
* every ``interval`` seconds: ``lock: strict`` connections their roles no longer allow, or
  whose locks cannot be verified (an agent cut off from auth for too long), and connections of
  any mode that a lock targets (``best_effort`` ends them at this next check).

Each ending is an ``access.denied`` audit event with the reason (and the lock's name), and the
client reads the reason. Started by ``NodeSSHServer.start``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from limen.aio.changed import wait_event
from limen.errors import AccessDenied, LimenError
from limen.services.locks import LocksUnknown, LockView, lock_fields

if TYPE_CHECKING:
    from limen.agents.node.connection import NodeConnectionHandler
    from limen.agents.node.context import NodeContext

__all__ = ["enforce_strict_locks", "recheck_once"]

log = logging.getLogger(__name__)


async def recheck_once(context: NodeContext, handlers: Iterable[NodeConnectionHandler], *,
                       every_mode: bool = True, locks: LockView | None = None) -> int:
    """End the connections their roles or the locks no longer allow; returns how many.
    ``every_mode`` False: only ``lock: strict`` connections (a lock change). A strict
    connection whose roles cannot be read while ``locks`` is stale ends too: nothing can
    tell whether a lock targets it."""
    ended = 0
    for handler in list(handlers):
        state = handler.state
        if state.verified is None or not state.login or state.options is None:
            continue
        strict = state.options.lock == "strict"
        if not (strict or every_mode):
            continue
        try:
            decision = await context.access.check_ssh(state.identity, state.login)
        except LocksUnknown as err:
            if strict:
                _end(context, handler, str(err), rule="lock")
                ended += 1
            continue
        except AccessDenied as err:  # Locked
            _end(context, handler, str(err), rule="lock", **lock_fields(err))
            ended += 1
            continue
        except LimenError as err:
            if strict and locks is not None and locks.stale:
                _end(context, handler, str(LocksUnknown()), rule="lock")
                ended += 1
                continue
            log.warning("lock: cannot re-check %s: %s", state.user, err)
            continue
        if decision.allowed or not strict:
            continue
        context.audit.emit("access.denied", user=state.user, **state.fields(),
                           reason=f"access removed while connected: {decision.reason}",
                           role=decision.role, rule=decision.rule, lock="strict")
        handler.disconnect(f"your access to this node was removed ({decision.reason})")
        ended += 1
    return ended


def _end(context: NodeContext, handler: NodeConnectionHandler, reason: str, *, rule: str,
         **fields: Any) -> None:
    state = handler.state
    context.audit.emit("access.denied", user=state.user, **state.fields(), action="session",
                       reason=reason, role=None, rule=rule,
                       mode=state.options.lock if state.options else None, **fields)
    handler.disconnect(reason)


async def enforce_strict_locks(context: NodeContext, handlers: set[NodeConnectionHandler],
                               interval: float, locks: LockView | None = None) -> None:
    loop = asyncio.get_running_loop()
    next_full = loop.time() + interval
    pending = locks.changed.event if locks is not None else None
    while True:
        wait = max(next_full - loop.time(), 0.0)
        if locks is None or pending is None:
            await asyncio.sleep(wait)
            changed = False
        else:
            changed = await wait_event(pending, wait)
            pending = locks.changed.event  # a change during the re-check: seen next
        if changed:
            await recheck_once(context, handlers, every_mode=False, locks=locks)
            continue
        next_full = loop.time() + interval
        await recheck_once(context, handlers, locks=locks)
