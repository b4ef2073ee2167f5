"""The guard that ends open db and kube sessions a lock targets (limen.agents.session_locks),
over the real access policy (StoreAccessPolicy) and lock view: a lock change ends strict
sessions at once and best_effort ones at the next periodic check; a stale view ends strict
sessions whose roles cannot be read; other users' sessions stay."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from limen.agents.node.policy import StoreAccessPolicy
from limen.agents.session_locks import SessionLockGuard
from limen.api.resources import Kind, Resource
from limen.ca.identity import Identity
from limen.errors import ConnectionProblem
from limen.services.locks import LockView


class Roles:
    """A RoleLookup (the policy's seam) over a dict, which can lose its auth."""

    def __init__(self, roles: Mapping[str, Resource]) -> None:
        self.roles = dict(roles)
        self.reachable = True

    async def find(self, kind: Kind, name: str) -> Resource | None:
        if not self.reachable:
            raise ConnectionProblem("no route to auth")
        return self.roles.get(name)


def _role(name: str, mode: str) -> Resource:
    return Resource(Kind.ROLE, name, spec={"options": {"lock": mode},
                                           "allow": {"db_labels": {"*": "*"}}})


STRICT = Identity(username="sam", cluster="c", roles=("strict",))
LAX = Identity(username="lee", cluster="c", roles=("lax",))
OTHER = Identity(username="ola", cluster="c", roles=("strict",))


class Ended:
    def __init__(self) -> None:
        self.reasons: dict[str, tuple[str, dict[str, Any]]] = {}
        self.changed = asyncio.Event()

    def end(self, who: str) -> Any:
        async def end(reason: str, fields: dict[str, Any]) -> None:
            self.reasons[who] = (reason, fields)
            self.changed.set()
        return end


def _setup(clock: list[float]) -> tuple[Roles, LockView, SessionLockGuard]:
    roles = Roles({"strict": _role("strict", "strict"), "lax": _role("lax", "best_effort")})
    view = LockView(max_staleness=30.0, clock=lambda: clock[0])
    view.replace([], 1)
    policy = StoreAccessPolicy(roles, {}, cluster="c", locks=view, server_names=("db-1",))
    return roles, view, SessionLockGuard(policy, view, interval=3600.0)


def _lock(name: str, **target: str) -> Resource:
    return Resource(Kind.LOCK, name, spec={"target": target, "message": f"{name} says no"})


async def test_a_lock_change_ends_strict_sessions_and_the_periodic_check_the_others() -> None:
    _, view, guard = _setup([0.0])
    ended = Ended()
    with guard.track(STRICT, ended.end("sam")), guard.track(LAX, ended.end("lee")), \
            guard.track(OTHER, ended.end("ola")):
        view.put(_lock("all-on-db-1", node="db-1"), 2)
        assert await guard.recheck(every_mode=False) == 2  # what a lock change runs
        assert set(ended.reasons) == {"sam", "ola"}
        reason, fields = ended.reasons["sam"]
        assert reason == "locked: all-on-db-1 says no"
        assert fields == {"mode": "strict", "lock": "all-on-db-1", "lock_target": "node=db-1"}
        assert await guard.recheck() == 1  # the periodic check: best_effort ends now
        assert ended.reasons["lee"][1]["mode"] == "best_effort"
        assert await guard.recheck() == 0  # ended sessions are no longer tracked


async def test_the_running_guard_reacts_to_a_lock_at_once() -> None:
    _, view, guard = _setup([0.0])
    ended = Ended()
    guard.start()
    try:
        with guard.track(STRICT, ended.end("sam")), guard.track(LAX, ended.end("lee")):
            view.put(_lock("sam-out", user="sam"), 2)
            await asyncio.wait_for(ended.changed.wait(), 2.0)
            assert set(ended.reasons) == {"sam"}
    finally:
        await guard.stop()


async def test_a_stale_view_ends_strict_sessions_whose_roles_cannot_be_read() -> None:
    clock = [0.0]
    roles, _view, guard = _setup(clock)
    ended = Ended()
    with guard.track(STRICT, ended.end("sam"), "strict"), \
            guard.track(LAX, ended.end("lee"), "best_effort"):
        roles.reachable = False
        assert await guard.recheck() == 0  # unreachable but the view is still fresh
        clock[0] += 31.0
        assert await guard.recheck() == 1
        assert ended.reasons["sam"][0] == "cannot verify locks: auth unreachable"
        assert "lee" not in ended.reasons
