"""An agent's tunnels to every proxy of its cluster: one :class:`TunnelAgent` per proxy.

::

    TunnelAgentPool("proxy:3024")            the address the agent was given (a proxy, or a
      │                                        TCP load balancer in front of the proxies)
      ├─ seed TunnelAgent ─▶ welcome from proxy A: {A: a:3024, B: b:3024}   (and ``proxies``
      │                                                                    on every change)
      └─ TunnelAgent("b:3024") ─▶ B            started for each announced proxy no tunnel holds
                                               yet; stopped once its address has not been
                                               announced for ``forget_after`` s (and it is down)

Proxies are told apart by the host id in their verified welcome, never by address: the same
proxy may be reached at two addresses (the one given, the one it announces). Each agent's
``hello`` names the proxies its siblings hold (``held``), so a connection that reaches one of
them again is welcomed without being registered and closed by the agent; the tunnel that holds
the proxy is left alone. A tunnel that is down while a sibling holds the proxy announcing its
address is stopped (it comes back if the proxy is ever free again); the seed, redundant, goes
dormant and wakes only when no tunnel is up at all (it is then the way back in). An agent
whose announced address leads to another proxy than announced retries slowly
(``redundant_retry``).

The decisions are :func:`limen.tunnel.pool_plan.plan`'s; the pool applies them after every
change of any tunnel. Every agent serves dials and heartbeats with the same callables, so a
user connected to any proxy reaches the node. The pool's route to auth
(:meth:`local_auth_listener`) uses the connected tunnels in turn. Called by the node and db
agents (``limen.agents.node.node_service``, ``limen.agents.db.db_service``) instead of a
single ``TunnelAgent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Collection

from limen.aio.changed import Changed
from limen.ca.host_credentials import HostCredentials
from limen.errors import ConnectionProblem
from limen.tunnel.agent import TunnelAgent
from limen.tunnel.agent_settings import (
    DialHandler,
    DialPreparer,
    HeartbeatSource,
    TunnelAgentSettings,
)
from limen.tunnel.auth_route import AuthTicket, LocalAuthListener
from limen.tunnel.pool_plan import TunnelState, plan
from limen.tunnel.protocol import ProxyEntry
from limen.tunnel.stopping import stop_task

__all__ = ["TunnelAgentPool"]

log = logging.getLogger(__name__)


class TunnelAgentPool:
    """See the module docstring. Same arguments as :class:`TunnelAgent`."""

    def __init__(
        self, proxy_tunnel_address: str, credentials: HostCredentials,
        handler: DialHandler | None, heartbeat: HeartbeatSource, *,
        prepare: DialPreparer | None = None,
        settings: TunnelAgentSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or TunnelAgentSettings()
        self.credentials = credentials
        self.handler = handler
        self.prepare = prepare
        self.heartbeat = heartbeat
        self.address = proxy_tunnel_address
        """The seed: the address the agent was given."""
        self.agents: dict[str, TunnelAgent] = {}
        """One tunnel agent per address, the seed's included."""
        self.connected = asyncio.Event()
        """Set while at least one tunnel is up."""
        self.known: tuple[ProxyEntry, ...] = ()
        """The proxy set the connected proxies announce (kept while none is connected)."""
        self._clock = clock
        self._unannounced: dict[str, float] = {}
        self._seed_dormant = False
        self._stopping = False
        self._changed = Changed()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._auth_listener: LocalAuthListener | None = None
        self._turn = itertools.count()
        self.agents[proxy_tunnel_address] = self._new_agent(proxy_tunnel_address)

    @property
    def seed(self) -> TunnelAgent:
        return self.agents[self.address]

    @property
    def proxy_ids(self) -> set[str]:
        """Host ids of the proxies a tunnel is up to."""
        return {a.proxy_id for a in self.agents.values() if a.connected.is_set()}

    def use_credentials(self, credentials: HostCredentials) -> None:
        """Every tunnel agent, and those started later, use ``credentials`` (a CA rotation:
        ``limen.agents.host_cert_renewal``); open tunnels stay up."""
        self.credentials = credentials
        for agent in self.agents.values():
            agent.use_credentials(credentials)

    def use_settings(self, settings: TunnelAgentSettings) -> None:
        """Every tunnel agent, and those started later, use ``settings`` (the caller's
        ``on_trust`` added before :meth:`start`; an open connection keeps what it read)."""
        self.settings = settings
        for agent in self.agents.values():
            agent.settings = settings

    def _new_agent(self, address: str) -> TunnelAgent:
        return TunnelAgent(address, self.credentials, self.handler, self.heartbeat,
                           prepare=self.prepare, settings=self.settings, observer=self)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            await self.seed.start()
            self._task = asyncio.create_task(self._maintain(),
                                             name=f"tunnel agent pool {self.address}")

    async def stop(self) -> None:
        self._stopping = True
        self._changed.notify()
        if self._auth_listener is not None:
            self._auth_listener.close()
            self._auth_listener = None
        task, self._task = self._task, None
        await stop_task(task)
        await asyncio.gather(*(agent.stop() for agent in list(self.agents.values())),
                             return_exceptions=True)
        for child in list(self._tasks):
            child.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.connected.clear()

    async def wait_for(self, predicate: Callable[[TunnelAgentPool], bool],
                       within: float) -> None:
        """Return once ``predicate(self)`` holds (checked at every change of any tunnel);
        ``TimeoutError`` after ``within`` seconds."""
        async with asyncio.timeout(within):
            while True:
                event = self._changed.event
                if predicate(self):
                    return
                await event.wait()

    # ------------------------------------------------------------------ TunnelObserver

    def held_elsewhere(self, agent: TunnelAgent) -> Collection[str]:
        return {a.proxy_id for a in self.agents.values()
                if a is not agent and a.connected.is_set()}

    def changed(self, agent: TunnelAgent) -> None:
        up = [a for a in self.agents.values() if a.connected.is_set()]
        if up:
            self.connected.set()
            self.known = tuple(sorted({p for a in up for p in a.proxies},
                                      key=lambda p: (p.host_id, p.address)))
        else:
            self.connected.clear()
        self._changed.notify()

    # ------------------------------------------------------------------ reconciling

    async def _maintain(self) -> None:
        while True:
            event = self._changed.event
            try:
                wake = await self._reconcile()
            except Exception:  # a tunnel that failed to stop: keep the others managed
                log.exception("tunnel agent pool: reconciling the tunnels failed")
                wake = self.settings.redundant_retry
            if self._stopping:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wake):
                    await event.wait()

    async def _reconcile(self) -> float | None:
        """Apply :func:`~limen.tunnel.pool_plan.plan`; the seconds until it should run again
        for an address to be forgotten (None: only on the next change)."""
        todo = plan(self.address, [
            TunnelState(address, a.connected.is_set(), a.proxy_id, a.redundant_for,
                        failing=a.failures > 0)
            for address, a in self.agents.items()], self.known,
            seed_dormant=self._seed_dormant, unannounced=self._unannounced,
            now=self._clock(), forget_after=self.settings.forget_after)
        self._unannounced = dict(todo.unannounced)
        if todo.seed == "sleep":
            log.info("tunnel agent pool: %s leads to proxy %s, held by another tunnel; the "
                     "seed sleeps while a tunnel is up", self.address, self.seed.redundant_for)
            self._seed_dormant = True
            await self.seed.stop()
        elif todo.seed == "wake":
            log.info("tunnel agent pool: no tunnel is up; dialling %s again", self.address)
            self._seed_dormant = False
            await self.seed.start()
        for address in todo.drop:
            agent = self.agents.pop(address, None)
            if agent is not None:
                log.info("tunnel agent pool: closing the tunnel to %s (its proxy is held "
                         "through another address, or no proxy announces it any more)",
                         address)
                await agent.stop()
                self.changed(agent)
        for proxy in todo.dial:
            log.info("tunnel agent pool: dialling proxy %s at %s", proxy.host_id,
                     proxy.address)
            self.agents[proxy.address] = agent = self._new_agent(proxy.address)
            await agent.start()
        return todo.wake_in

    # ------------------------------------------------------------------ auth through a proxy

    async def local_auth_listener(self, address: str = "127.0.0.1:0") -> str:
        """A loopback listener whose connections reach the auth API through any connected
        proxy (see :mod:`limen.tunnel.auth_route`); closed by :meth:`stop`."""
        if self._auth_listener is None:
            self._auth_listener = LocalAuthListener(
                self.request_auth_ticket, self._spawn,
                idle_timeout=self.settings.auth_idle_timeout)
        return await self._auth_listener.start(address)

    async def request_auth_ticket(self) -> AuthTicket:
        """A data connection to auth through one of the connected proxies (taken in turn; the
        next one when a proxy cannot)."""
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                await self.connected.wait()
        except TimeoutError:
            raise ConnectionProblem(f"no tunnel to any proxy (given: {self.address})"
                                    + (f": {self.seed.last_error}" if self.seed.last_error
                                       else "")) from None
        up = [a for a in self.agents.values() if a.connected.is_set()]
        start = next(self._turn)
        problem: ConnectionProblem | None = None
        for i in range(len(up)):
            agent = up[(start + i) % len(up)]
            try:
                return await agent.request_auth_ticket()
            except ConnectionProblem as err:
                problem = err
        raise problem or ConnectionProblem("the tunnels to the proxies went down")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
