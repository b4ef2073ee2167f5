"""A proxy hands another cluster's signed CA update, as its cluster link brought it, to this
cluster's auth: the latest one per cluster, again and again while auth cannot be reached.

::

    cluster link message (cas from a root, leaf_cas from a leaf)
      └─▶ CARelay.hand(cluster, update)   a newer update replaces one not handed yet
            POST path(cluster) {update} to this cluster's auth, which checks the signature
            itself and stores the set (limen.auth.trusted_clusters.cas_apply)
            auth unreachable (ConnectionProblem, OSError, timeout) ─▶ again, with backoff
            refused by auth (audited there) ─▶ logged, not retried

The proxy only carries the update: it holds no key that makes it valid. The sender sends once
per change (and when its link is welcomed), hence the retries. Used by the leaf proxy for its
roots' updates (``limen.proxy.trust_leaf_links``) and by the root proxy for its leaves'
(``limen.proxy.sshproxy``, ``POST /v1/trust/leaves/{leaf}/cas``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from limen.aio.backoff import Backoff
from limen.aio.tasks import cancel_and_wait
from limen.auth.client import AuthClient
from limen.errors import ConnectionProblem, LimenError

__all__ = ["CARelay"]

log = logging.getLogger(__name__)


class CARelay:
    """See the module doc. ``auth()``: this proxy's auth client now (None: not started yet,
    retried); ``path(cluster)``: the auth route of that cluster's updates; ``what``: how the
    logs name the sender (``root``, ``leaf``)."""

    def __init__(self, auth: Callable[[], AuthClient | None], path: Callable[[str], str],
                 what: str, *, backoff: Callable[[], Backoff] = Backoff) -> None:
        self.auth = auth
        self.path = path
        self.what = what
        self.backoff = backoff
        self.pending: dict[str, asyncio.Task[None]] = {}
        """The latest update of each cluster being handed to auth."""

    def hand(self, cluster: str, update: Mapping[str, Any]) -> None:
        """Hand ``cluster``'s update to auth; a newer one replaces one not handed yet."""
        previous = self.pending.pop(cluster, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.create_task(self._hand(cluster, dict(update)),
                                   name=f"{self.what}-cas-{cluster}")
        self.pending[cluster] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self.pending.get(cluster) is finished:
                del self.pending[cluster]
        task.add_done_callback(done)

    async def stop(self) -> None:
        await cancel_and_wait(*self.pending.values())

    async def _hand(self, cluster: str, update: dict[str, Any]) -> None:
        backoff, warned = self.backoff(), False
        while True:
            auth = self.auth()
            try:
                if auth is None:
                    raise ConnectionProblem("this proxy's SSH service is not started")
                await auth.call("POST", self.path(cluster), update)
                return
            except asyncio.CancelledError:
                raise
            except (ConnectionProblem, OSError, TimeoutError) as err:
                if not warned:
                    log.warning("cluster links: cannot hand %s %s's CA update to auth (%s); "
                                "trying again", self.what, cluster, err)
                warned = True
            except LimenError as err:  # refused by auth (audited there): nothing to retry
                log.warning("cluster links: auth refused %s %s's CA update: %s", self.what,
                            cluster, err)
                return
            await asyncio.sleep(backoff.next_delay())
