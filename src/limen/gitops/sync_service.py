"""The Git sync as a ``limen start`` service: one sync at a time among auth replicas.

Every auth replica started with ``--gitops`` runs this service, but only the one holding the
Git sync's lease (``/leases/gitops-sync``, ``limen.backend.lease``) polls and applies::

    start ─▶ try the lease ──won──▶ first sync, then poll in the background (GitOpsSync)
              │                       │ lease lost (another replica took it after it expired)
              │ held by another       ▼
              └──────▶ standby ◀── pause the poll ◀┘
                         │ every retry_every: try again; the leader died → its lease expired
                         ▼ (within LEASE_TTL) → won → start again from the recorded status

The leader renews the lease every ``RENEW_EVERY`` seconds; every write of the sync (the apply
and the status) carries the lease as a condition (``Leadership.fenced``), so the apply stays
all or nothing across replicas: a replica that lost the lease mid-sync writes nothing. A
replica that stops cleanly releases the lease, and another takes over at its next try.

``start()`` returns after the first sync attempt when this replica leads (so
DATA_DIR/listeners.json, what scripts and tests wait for, appears once the repository's state
is in the store), at once when another replica leads. It opens no listener. Built by
``limen.cli.compose.cluster_services`` when ``gitops.source`` is set, after the auth service
(whose ``AuthServer`` it applies through).
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from limen.aio.tasks import cancel_and_wait
from limen.auth.auth_service import AuthService, host_uuid
from limen.config import Settings
from limen.diag.metrics import Metrics
from limen.gitops.sync import GitOpsSync
from limen.services.leadership import LEASE_TTL, RENEW_EVERY, RETRY_EVERY, replica_leadership

__all__ = ["GITOPS_LEASE_KEY", "LEASE_TTL", "RENEW_EVERY", "RETRY_EVERY", "GitOpsService"]

log = logging.getLogger(__name__)

GITOPS_LEASE_KEY = "/leases/gitops-sync"


class GitOpsService:
    name = "gitops"

    def __init__(self, settings: Settings, auth: AuthService, *,
                 lease_ttl: float = LEASE_TTL, renew_every: float = RENEW_EVERY,
                 retry_every: float = RETRY_EVERY, metrics: Metrics | None = None) -> None:
        """The lease timings are for tests. This replica's name in the lease is its host id
        (DATA_DIR/host_uuid) and a random suffix (unique per process: a restarted replica
        waits for its former lease to expire like any other)."""
        server = auth.server
        self.holder = f"{host_uuid(settings.data_dir)}/{secrets.token_hex(4)}"
        self.leadership = replica_leadership(
            server.backend, GITOPS_LEASE_KEY, self.holder, name="gitops", clock=server.clock,
            ttl=lease_ttl, renew_every=renew_every, retry_every=retry_every)
        self.sync = GitOpsSync(settings, server, fence=self.leadership.fenced,
                               leader=self.holder, metrics=metrics)
        self._follow: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self.leadership.leading

    async def start(self) -> dict[str, str]:
        if await self.leadership.start():
            await self.sync.start()
        else:
            log.info("gitops: another auth replica holds the Git sync's lease; standing by")
        self._follow = asyncio.create_task(self._follow_leadership(), name="gitops-leader")
        return {}

    async def _follow_leadership(self) -> None:
        """Poll while this replica leads, pause while it does not (one transition at a time)."""
        while True:
            if self.sync.running:
                await self.leadership.wait_until(False)
                log.warning("gitops: this replica no longer holds the Git sync's lease; "
                            "standing by")
                await self.sync.pause()
            else:
                await self.leadership.wait_until(True)
                log.info("gitops: this replica holds the Git sync's lease; syncing")
                await self.sync.start()
                if not self.sync.running:  # lost again during the first sync
                    await self.leadership.wait_until(False)

    async def stop(self) -> None:
        task, self._follow = self._follow, None
        await cancel_and_wait(task)
        await self.sync.stop()
        await self.leadership.stop()
