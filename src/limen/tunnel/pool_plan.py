"""What an agent pool should do next, decided from what its tunnels know: pure, unit-tested.

Given the seed address, the state of every tunnel (address, proxy reached, connected,
redundant) and the proxy set the connected proxies announce, :func:`plan` says which
addresses to dial, which tunnels to stop, whether the seed sleeps or wakes, and which
addresses have gone unannounced since when:

* dial an announced proxy that no connected tunnel holds and no tunnel dials yet;
* stop a tunnel (never the seed) whose last attempt failed or was redundant while the proxy
  announcing its address is held by another tunnel (a duplicate path, e.g. the proxy was
  reached through the seed; it is dialled again if the proxy is ever free; an attempt under
  way is left to finish: it may be the one the proxy registered last), and one whose address
  no proxy has announced for ``forget_after`` seconds while it is down;
* the seed sleeps after reaching a proxy held elsewhere while some tunnel is up, and wakes
  when none is (it is then the only address known to work).

Called by :class:`limen.tunnel.agent_pool.TunnelAgentPool`, which applies the plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from limen.errors import BadParameter
from limen.net.address import parse_address
from limen.tunnel.protocol import ProxyEntry

__all__ = ["PoolPlan", "TunnelState", "plan"]


@dataclass(frozen=True)
class TunnelState:
    """One tunnel of the pool as the plan sees it."""

    address: str
    connected: bool = False
    proxy_id: str = ""
    """The proxy the current (or last) connection reached."""
    redundant_for: str = ""
    """The last connection reached this proxy while another tunnel held it."""
    failing: bool = False
    """The last attempt failed (not merely under way)."""


@dataclass(frozen=True)
class PoolPlan:
    dial: tuple[ProxyEntry, ...] = ()
    drop: tuple[str, ...] = ()
    """Addresses whose tunnel stops for good."""
    seed: str = ""
    """``sleep``, ``wake`` or "" (leave it)."""
    unannounced: Mapping[str, float] = field(default_factory=dict)
    """Since when each down tunnel's address has gone unannounced (the next call's input)."""
    wake_in: float | None = None
    """Seconds until an address may be forgotten (None: nothing pending)."""


def plan(seed: str, tunnels: Sequence[TunnelState], known: Sequence[ProxyEntry], *,
         seed_dormant: bool, unannounced: Mapping[str, float], now: float,
         forget_after: float) -> PoolPlan:
    """See the module docstring."""
    any_up = any(t.connected for t in tunnels)
    held = {t.proxy_id for t in tunnels if t.connected}
    announced = {p.address: p.host_id for p in known}
    by_address = {t.address: t for t in tunnels}
    seed_state = by_address.get(seed)
    seed_action = ""
    if not seed_dormant and seed_state is not None and seed_state.redundant_for and any_up:
        seed_action = "sleep"
    elif seed_dormant and not any_up:
        seed_action = "wake"
    drop = [t.address for t in tunnels if t.address != seed and not t.connected
            and (t.redundant_for or t.failing) and announced.get(t.address, "") in held]
    dial: dict[str, ProxyEntry] = {}
    for proxy in known:
        if proxy.host_id not in held and proxy.address not in by_address \
                and proxy.address not in dial and _valid(proxy.address):
            dial[proxy.address] = proxy
    since: dict[str, float] = {}
    wake_in: float | None = None
    for t in tunnels:
        if t.address == seed or t.connected or t.address in announced or t.address in drop:
            continue
        first = unannounced.get(t.address, now)
        left = first + forget_after - now
        if left <= 0:
            drop.append(t.address)
        else:
            since[t.address] = first
            wake_in = left if wake_in is None else min(wake_in, left)
    return PoolPlan(dial=tuple(dial.values()), drop=tuple(drop), seed=seed_action,
                    unannounced=since, wake_in=wake_in)


def _valid(address: str) -> bool:
    try:
        parse_address(address)
    except BadParameter:
        return False
    return True
