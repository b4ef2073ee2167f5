"""The agent pool's decisions (limen.tunnel.pool_plan): which announced proxies to dial, which
tunnels to stop (a duplicate path to a held proxy, an address unannounced for a while), when
the seed sleeps and wakes; pure, so every case is exact."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from limen.tunnel.pool_plan import PoolPlan, TunnelState, plan
from limen.tunnel.protocol import ProxyEntry

SEED = "lb:3024"
A, B, C = ProxyEntry("a", "a:3024"), ProxyEntry("b", "b:3024"), ProxyEntry("c", "c:3024")


def decide(tunnels: Sequence[TunnelState], known: Sequence[ProxyEntry], *,
           dormant: bool = False, unannounced: Mapping[str, float] | None = None,
           now: float = 100.0, forget_after: float = 60.0) -> PoolPlan:
    return plan(SEED, tunnels, known, seed_dormant=dormant, unannounced=unannounced or {},
                now=now, forget_after=forget_after)


def test_every_announced_proxy_no_tunnel_holds_is_dialled_once() -> None:
    todo = decide([TunnelState(SEED, True, "a")], [A, B, C, ProxyEntry("d", "c:3024")])
    assert todo.dial == (B, C)  # a is held through the seed; c:3024 once
    assert (todo.drop, todo.seed, todo.wake_in) == ((), "", None)


def test_a_proxy_held_at_another_address_is_not_dialled_again() -> None:
    todo = decide([TunnelState(SEED, True, "a"), TunnelState("b:3024", True, "b")], [A, B])
    assert todo == PoolPlan()


def test_a_down_tunnel_to_an_announced_proxy_is_not_dialled_twice() -> None:
    todo = decide([TunnelState(SEED, True, "a"), TunnelState("b:3024", False, "b")], [A, B])
    assert todo.dial == ()
    assert todo.drop == ()


def test_invalid_announced_addresses_are_skipped() -> None:
    todo = decide([TunnelState(SEED, True, "a")], [ProxyEntry("x", "no port"), B])
    assert todo.dial == (B,)


def test_a_duplicate_path_to_a_held_proxy_is_stopped_but_never_the_seed() -> None:
    tunnels = [TunnelState(SEED, True, "a"),
               TunnelState("a:3024", False, "a", redundant_for="a")]
    assert decide(tunnels, [A]).drop == ("a:3024",)
    # failing (say, its address does not resolve here) while the seed holds its proxy
    assert decide([TunnelState(SEED, True, "a"), TunnelState("a:3024", failing=True)],
                  [A]).drop == ("a:3024",)
    # an attempt under way is left to finish: the proxy may have registered it last
    assert decide([TunnelState(SEED, True, "a"), TunnelState("a:3024")], [A]).drop == ()
    # the seed reaching a proxy held through its announced address stays (it sleeps)
    tunnels = [TunnelState(SEED, False, "a", redundant_for="a"),
               TunnelState("a:3024", True, "a")]
    assert decide(tunnels, [A]).drop == ()
    # an address leading to ANOTHER proxy than the one announcing it: kept, retried slowly
    tunnels = [TunnelState(SEED, True, "a"), TunnelState("b:3024", False, "a",
                                                         redundant_for="a")]
    assert decide(tunnels, [A, B]).drop == ()


def test_the_seed_sleeps_when_redundant_and_wakes_when_nothing_is_up() -> None:
    redundant_seed = TunnelState(SEED, False, "a", redundant_for="a")
    assert decide([redundant_seed, TunnelState("a:3024", True, "a")], [A]).seed == "sleep"
    assert decide([redundant_seed, TunnelState("a:3024", True, "a")], [A],
                  dormant=True).seed == ""
    assert decide([redundant_seed, TunnelState("a:3024", False, "a")], [A],
                  dormant=True).seed == "wake"
    # redundant but nothing else is up (the holder just went down): keep trying
    assert decide([redundant_seed], [A]).seed == ""


def test_an_unannounced_down_tunnel_is_forgotten_after_forget_after() -> None:
    tunnels = [TunnelState(SEED, True, "a"), TunnelState("b:3024", False, "b")]
    first = decide(tunnels, [A], now=100.0)
    assert first.drop == ()
    assert first.unannounced == {"b:3024": 100.0}
    assert first.wake_in == 60.0
    later = decide(tunnels, [A], unannounced=first.unannounced, now=130.0)
    assert later.drop == ()
    assert later.wake_in == 30.0
    assert later.unannounced == {"b:3024": 100.0}
    assert decide(tunnels, [A], unannounced=later.unannounced, now=160.0).drop == ("b:3024",)


def test_announced_again_or_connected_resets_the_forget_clock() -> None:
    down = [TunnelState(SEED, True, "a"), TunnelState("b:3024", False, "b")]
    assert decide(down, [A, B], unannounced={"b:3024": 0.0}).unannounced == {}
    up = [TunnelState(SEED, True, "a"), TunnelState("b:3024", True, "b")]
    assert decide(up, [A], unannounced={"b:3024": 0.0}) == PoolPlan()


def test_the_seed_is_never_forgotten() -> None:
    todo = decide([TunnelState(SEED, False), TunnelState("a:3024", True, "a")], [A],
                  unannounced={SEED: 0.0}, now=1e9)
    assert todo.drop == ()
    assert todo.unannounced == {}
