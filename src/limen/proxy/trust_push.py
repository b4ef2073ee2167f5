"""The proxy's part of its agents' trust: auth's trust answer fetched once here, signed by auth,
and pushed to every agent over its tunnel, instead of each node polling auth every 3 s.

::

    auth GET /v1/trust/roots/signed?revision=R   every ``interval`` s (1): a small signed
      keepalive while R is current; the full signed answer when it changed, and every
      ``refresh`` s (10) without R, so that the copy an agent gets when it registers is fresh
        └─▶ TrustPusher ─▶ TunnelServer.publish_trust(trust {doc}) ─▶ every agent whose hello
              asked (node agents), each one registered later, over the control channel:
              the full answer when its revision changed, a keepalive every ``keepalive`` s

The proxy checks nothing but the cluster name: the agent verifies auth's signature, its
certificate (this cluster's TLS CA, role ``auth``), the revision order and the age
(``limen.trust.roots_poller.RemoteTrustCache.pushed``), so a proxy cannot make an agent trust
what auth did not publish; withholding is bounded by the agent's fallback to polling auth.
While auth does not answer, nothing is sent. Started and stopped by
:class:`limen.proxy.sshproxy.ProxySSHService` with its tunnel listener.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from limen.aio.task_service import TaskService
from limen.auth.client import AuthClient
from limen.auth.trust_signature import SIGNED_TRUST_PATH
from limen.errors import BadParameter, LimenError
from limen.tunnel.protocol import TrustPush
from limen.tunnel.server import TunnelServer

__all__ = ["TrustPusher"]

log = logging.getLogger(__name__)


class TrustPusher(TaskService):
    """See the module doc."""

    name = "trust-push"

    def __init__(self, auth: AuthClient, tunnel: TunnelServer, cluster: str, *,
                 interval: float = 1.0, refresh: float = 10.0, keepalive: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.auth = auth
        self.tunnel = tunnel
        self.cluster = cluster
        self.interval = interval
        self.refresh = refresh
        self.keepalive = keepalive
        self.clock = clock
        self.revision = ""
        """The revision of the last full answer fetched."""
        self._full_at: float | None = None
        self._pushed_at: float | None = None

    async def push_once(self) -> str:
        """Ask auth once and push what is due: ``"full"``, ``"keepalive"`` or ``""``."""
        full_due = self._full_at is None or self.clock() - self._full_at >= self.refresh
        doc = await self.auth.call("GET", SIGNED_TRUST_PATH, params=(
            None if full_due or not self.revision else {"revision": self.revision}))
        if not isinstance(doc, Mapping) or doc.get("cluster") != self.cluster \
                or not isinstance(doc.get("revision"), str):
            raise BadParameter("auth's signed trust answer is not this cluster's")
        revision = str(doc["revision"])
        if doc.get("answer"):
            self._full_at = self.clock()
            changed, self.revision = revision != self.revision, revision
            self.tunnel.keep_trust(TrustPush(doc=dict(doc)))  # for agents registered later
            if changed:
                return await self._push(doc, "full")
            return ""
        if revision != self.revision:  # changed since the last full answer: fetch it next
            self._full_at = None
            return ""
        if self._pushed_at is None or self.clock() - self._pushed_at >= self.keepalive:
            return await self._push(doc, "keepalive")
        return ""

    async def _push(self, doc: Mapping[str, Any], what: str) -> str:
        sent = await self.tunnel.publish_trust(TrustPush(doc=dict(doc)))
        self._pushed_at = self.clock()
        if what == "full":
            log.info("trust push: revision %s sent to %d agent(s)", self.revision[:12], sent)
        return what

    async def _run(self) -> None:
        warned = False
        while True:
            try:
                await self.push_once()
                warned = False
            except asyncio.CancelledError:
                raise
            except (LimenError, OSError, TimeoutError, ValueError) as err:
                if not warned:  # auth unreachable or older, or an answer over a frame
                    log.warning("trust push: nothing pushed (%s); the agents keep the last "
                                "answer and ask auth themselves after 45 s", err)
                warned = True
            await asyncio.sleep(self.interval)
