"""Asyncio primitives every long-running part of Limen shares; imports nothing of Limen.

Modules::

    backoff   reconnect delays: exponential backoff with full jitter
    changed   Changed: a "something changed" broadcast; wait_event(event, within)
    tasks     cancel_and_wait(*tasks): the one way a service ends its background tasks
    service   the Service protocol (start → listeners, stop) and TaskService, a Service
              whose work is one background loop

Called by the backends, the tunnel, the trust links, the proxy, the agents and the daemon
(``limen.cli.daemon`` runs every ``Service``). Sits below every other Limen package.
"""

from limen.aio.backoff import Backoff
from limen.aio.changed import Changed, wait_event
from limen.aio.task_service import Service, TaskService
from limen.aio.tasks import cancel_and_wait

__all__ = ["Backoff", "Changed", "Service", "TaskService", "cancel_and_wait", "wait_event"]
