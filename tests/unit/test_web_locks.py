"""The web UI's lock checks (``limen.proxy.webui.web_locks``) with a real lock view: a web
session is refused for a lock on its user or one of its roles (not for a node or login lock:
a web call has neither), the ``lock`` option of its roles sets how often an open terminal is
checked (``strict`` when the roles cannot be read), and the watch returns the lock once one
appears."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from limen.api.resources import Kind, Resource
from limen.errors import ConnectionProblem
from limen.proxy.webui.sessions import WebSession
from limen.proxy.webui.web_locks import WebLocks
from limen.services.locks import Locked, LockView

ROLES = {
    "dev": Resource(Kind.ROLE, "dev", spec={"allow": {"logins": ["dev"]}}),
    "tight": Resource(Kind.ROLE, "tight", spec={"options": {"lock": "strict"}}),
}


def _session(*roles: str) -> WebSession:
    return WebSession(id="id", csrf="csrf", user="bob", cluster="c", roles=list(roles),
                      logins=["dev"], private_key_pem=b"", ssh_cert="", tls_cert_der=b"",
                      known_hosts=[], cert_expires=datetime(2030, 1, 1, tzinfo=UTC))


def _lock(name: str, **target: str) -> Resource:
    return Resource(Kind.LOCK, name, spec={"target": target, "message": f"msg {name}"})


def _web_locks(view: LockView, roles: Mapping[str, Resource] | None = ROLES) -> WebLocks:
    async def locks() -> LockView:
        return view

    async def read_roles() -> Mapping[str, Resource]:
        if roles is None:
            raise ConnectionProblem("auth unreachable")
        return roles

    return WebLocks(locks, read_roles, strict_interval=0.01, best_effort_interval=0.02)


async def test_user_and_role_locks_refuse_a_web_session_node_and_login_locks_do_not() -> None:
    view = LockView(max_staleness=None)
    web = _web_locks(view)
    view.replace([_lock("n", node="web1"), _lock("l", login="root")], 1)
    await web.check(_session("dev"))
    view.replace([_lock("r", role="dev")], 2)
    with pytest.raises(Locked, match="locked: msg r"):
        await web.check(_session("dev"))
    await web.check(_session("tight"))
    view.replace([_lock("u", user="bob")], 3)
    with pytest.raises(Locked, match="locked: msg u"):
        await web.check(_session("tight"))


async def test_the_mode_comes_from_the_roles() -> None:
    view = LockView(max_staleness=None)
    assert await _web_locks(view).mode(_session("dev")) == "best_effort"
    assert await _web_locks(view).mode(_session("dev", "tight")) == "strict"
    assert await _web_locks(view, roles=None).mode(_session("dev")) == "strict"


@pytest.mark.parametrize("mode", ["strict", "best_effort"])
async def test_the_watch_returns_the_lock_once_one_appears(mode: str) -> None:
    view = LockView(max_staleness=None)
    watch = asyncio.create_task(_web_locks(view).watch(_session("dev"), mode))
    try:
        await asyncio.sleep(0)  # the watch has made its first check
        assert not watch.done()
        view.replace([_lock("u", user="bob")], 1)
        async with asyncio.timeout(5.0):
            refusal = await watch
        assert refusal.lock.name == "u"
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
