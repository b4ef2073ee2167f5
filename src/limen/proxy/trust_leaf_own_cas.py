"""The leaf proxy's part of a CA rotation of its own cluster reaching its roots: this
cluster's public CAs, signed, sent to every root over the cluster link.

::

    this proxy's RootCAPublisher (limen.proxy.trust_root_cas) reads this cluster's CAs from
    auth (GET /v1/trust/roots?revision=R, every second): user, host and TLS, every key each
    trusts now (both keys during a rotation)
      └─▶ LeafCAPublisher.publish_once()  (every ``interval`` s, in memory)
            the CAs or this proxy's host certificate changed ─▶ make_update (direction
            leaf_to_root, limen.auth.trusted_clusters.ca_update): signed by this proxy's SSH
            host key, with its host certificate
            each root's link (TunnelAgent) that is up, whose root said in its welcome that it
            takes them (an older root would drop the link), and has not had this update on
            its current connection ─▶ leaf_cas {update} (again after every reconnection)
    root proxy ──POST /v1/trust/leaves/<this cluster>/cas──▶ root auth: checks it against
    this cluster's host CA as the ROOT stores it, and stores the set
    (limen.auth.trusted_clusters.root_leaf_cas)

Only public parts travel. A rotation's ``init`` reaches the roots before ``update_servers``
renews this proxy's certificate with the new key, so the root still verifies the link and the
updates after the renewal; ``standby`` drops the old key there too. Started and stopped by
:class:`limen.proxy.trust_leaf_links.LeafLinks` with the links.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from limen.aio.task_service import TaskService
from limen.auth.trusted_clusters.ca_update import Direction, make_update
from limen.auth.trusted_clusters.wire import CASet
from limen.ca.host_credentials import HostCredentials
from limen.errors import LimenError
from limen.tunnel.agent import TunnelAgent
from limen.tunnel.protocol import LeafCAs

__all__ = ["LeafCAPublisher"]

log = logging.getLogger(__name__)


class LeafCAPublisher(TaskService):
    """See the module doc. ``own()``: this cluster's CAs and this proxy's credentials as last
    read (None until known); ``links()``: the running cluster links by root name."""

    name = "leaf-cas"

    def __init__(self, own: Callable[[], tuple[CASet, HostCredentials] | None],
                 links: Callable[[], Mapping[str, TunnelAgent]], *, interval: float = 0.5,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.own = own
        self.links = links
        self.interval = interval
        self.clock = clock
        self._signed: tuple[CASet, bytes] | None = None
        self._message: LeafCAs | None = None
        self._sent: dict[str, tuple[LeafCAs, TunnelAgent, int]] = {}
        """What each root's link got: the message, on which agent and connection."""

    def publish_once(self) -> list[str]:
        """Sign when the CAs or this proxy's certificate changed; send to every link that has
        not had the current update on its current connection. The roots sent to."""
        links = self.links()
        for name in set(self._sent) - set(links):
            del self._sent[name]
        own = self.own()
        if own is None or not links:
            return []
        cas, creds = own
        if self._message is None or self._signed != (cas, creds.ssh_cert):
            self._message = LeafCAs(update=make_update(creds, cas, self.clock(),
                                                       Direction.LEAF_TO_ROOT))
            self._signed = (cas, creds.ssh_cert)
        sent = []
        for name, agent in links.items():
            mark = (self._message, agent, agent.connections)
            if self._sent.get(name) == mark or not agent.connected.is_set() \
                    or not agent.takes_leaf_cas:  # an older root would drop the link
                continue
            if agent.send(self._message):
                self._sent[name] = mark
                sent.append(name)
                log.info("leaf CAs: sent to root %s (user %d, host %d key(s))", name,
                         len(cas.user), len(cas.host))
        return sent

    async def _run(self) -> None:
        while True:
            try:
                self.publish_once()
            except asyncio.CancelledError:
                raise
            except (LimenError, ValueError) as err:
                log.warning("leaf CAs: cannot sign this cluster's CAs for its roots: %s", err)
            await asyncio.sleep(self.interval)
