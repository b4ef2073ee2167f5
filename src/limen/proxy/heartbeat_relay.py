"""The proxy's relay of its agents' heartbeats to auth, gathered and sent once a second.

::

    agents ── heartbeat every 10 s, over their tunnels ──▶ TunnelServer.heartbeat
        ──▶ HeartbeatRelay.submit (the latest per agent and Resource; nothing awaited)
        ──▶ every second: POST /v1/presence/heartbeats {tunnel, items} in requests of at most
            limen.auth.presence.MAX_BATCH ──▶ auth (limen.auth.presence.heartbeats)

One request per second instead of one per heartbeat: with thousands of agents, auth no longer
spends its loop on a request (and a client-certificate check) per agent. A batch auth could
not take (unreachable, overloaded) stays gathered for the next second, each item replaced by
any newer heartbeat of the same agent, so the relay holds at most one item per agent. An auth
without the batch route (an older one during an upgrade) gets the heartbeats one by one.
Items auth refused (a crafted Resource) are logged with the agent's host id.

Created and started by :class:`limen.proxy.sshproxy.ProxySSHService`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from limen.aio.tasks import cancel_and_wait
from limen.auth.client import AuthClient
from limen.auth.presence import MAX_BATCH
from limen.errors import BadParameter, ConnectionProblem, LimenError, NotFound
from limen.tunnel.registry import AgentRecord

__all__ = ["HeartbeatRelay"]

log = logging.getLogger(__name__)

_Key = tuple[str, str]


class HeartbeatRelay:
    """Gathers heartbeats (:meth:`submit`) and sends them to ``auth`` every ``every``
    seconds, as proxy ``tunnel`` (this proxy's host id)."""

    def __init__(self, auth: AuthClient, tunnel: str, *, every: float = 1.0,
                 batch: int = MAX_BATCH) -> None:
        self.auth = auth
        self.tunnel = tunnel
        self.every = every
        self.batch = batch
        self.batch_path = "/v1/presence/heartbeats"
        self.sent = 0
        """Heartbeats auth took (for tests and the bench)."""
        self._pending: dict[_Key, dict[str, Any]] = {}
        self._one_by_one = False
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def submit(self, record: AgentRecord, resource: Mapping[str, Any]) -> None:
        """Relay this heartbeat with the next batch (replacing a gathered one of the same agent
        and Resource)."""
        meta = resource.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        self._pending[(record.host_id, name if isinstance(name, str) else "")] = {
            "resource": dict(resource), "host_id": record.host_id, "cluster": record.cluster,
            "role": record.role}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="proxy-heartbeat-relay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def flush(self) -> None:
        """Send what is gathered now; what auth could not take stays for the next flush."""
        gathered, self._pending = self._pending, {}
        keys = list(gathered)
        for start in range(0, len(keys), self.batch):
            chunk = keys[start:start + self.batch]
            try:
                refused = await self._send([gathered[k] for k in chunk])
            except LimenError as err:
                for key in keys[start:]:  # newer heartbeats gathered meanwhile win
                    self._pending.setdefault(key, gathered[key])
                if not self._failing:
                    log.warning("proxy: cannot relay %d heartbeat(s) to auth (kept for the "
                                "next try): %s", len(keys) - start, err)
                self._failing = True
                return
            self._failing = False
            self.sent += len(chunk) - len(refused)
            for host_id, why in refused:
                log.warning("tunnel: cannot record the heartbeat of %s: %s", host_id, why)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.flush()
            except Exception:  # the relay must outlive any single failure
                log.exception("proxy: the heartbeat relay failed")

    async def _send(self, items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """Send ``items``; the (host id, reason) of those auth refused."""
        if not self._one_by_one:
            try:
                answer = await self.auth.call("POST", self.batch_path,
                                              {"tunnel": self.tunnel, "items": items})
            except NotFound:
                log.info("proxy: auth has no batch heartbeat route; relaying one by one")
                self._one_by_one = True
            else:
                errors = answer.get("errors") if isinstance(answer, dict) else None
                if not isinstance(errors, list) or len(errors) != len(items):
                    raise ConnectionProblem("auth answered the heartbeats without one outcome each")
                return [(item["host_id"], str(why)) for item, why in zip(items, errors,
                                                                          strict=True) if why]
        refused = []
        for item in items:
            try:
                await self.auth.call("POST", "/v1/presence/heartbeat",
                                     {**item, "tunnel": self.tunnel})
            except BadParameter as err:
                refused.append((item["host_id"], str(err)))
        return refused
