"""The web UI's pure parts on their own: the JSON depth scan, the rate limiter, the bundle path
check of the static pages and the web sessions' lifetime and CSRF comparison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from limen.errors import LimitExceeded
from limen.net.http import error_middleware
from limen.proxy.webui.guard import json_depth
from limen.proxy.webui.mount import WebUI
from limen.proxy.webui.ratelimit import RateLimiter
from limen.proxy.webui.sessions import IDLE_TTL, WebSession, WebSessions
from limen.proxy.webui.static import _asset


@pytest.mark.parametrize(("text", "depth"), [
    (b"{}", 1), (b'{"a": [1, {"b": []}]}', 4), (b'"[[[["', 0), (b'["\\"[[", [[]]]', 3),
    (b"[" * 64 + b"]" * 64, 64), (b"", 0),
])
def test_json_depth_ignores_brackets_in_strings(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth


def test_rate_limiter_refills_over_time() -> None:
    now = [0.0]
    limiter = RateLimiter(burst=2, per_minute=6, clock=lambda: now[0])
    limiter.take("a", "tries")
    limiter.take("a", "tries")
    with pytest.raises(LimitExceeded, match="too many tries: try again in 10 s"):
        limiter.take("a", "tries")
    limiter.take("b", "tries")  # keys are independent
    now[0] = 10.0
    limiter.take("a", "tries")


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(burst=1, per_minute=1, max_keys=3)
    for n in range(10):
        limiter.take(str(n), "tries")
    assert len(limiter._buckets) == 3


def test_static_assets_never_leave_the_bundle(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "assets" / "app.js").write_text("ok")
    (tmp_path / "secret").write_text("no")
    assert _asset(dist, "assets/app.js") == (dist / "assets" / "app.js").resolve()
    for tail in ("../secret", "assets/../../secret", "/etc/passwd", "assets//app.js",
                 "assets\\..\\..\\secret", "assets", "", "missing.js"):
        assert _asset(dist, tail) is None, tail


def _session(sessions: WebSessions, expires: datetime) -> WebSession:
    session = WebSession(id="i", csrf="token", user="u", cluster="c", roles=[], logins=[],
                         private_key_pem=b"", ssh_cert="", tls_cert_der=b"", known_hosts=[],
                         cert_expires=expires)
    sessions._sessions[session.id] = sessions.renew(session)
    return session


def test_sessions_expire_when_idle_and_never_outlive_the_certificate() -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    sessions = WebSessions(clock=lambda: now[0])
    session = _session(sessions, now[0] + timedelta(hours=8))
    assert session.expires == now[0] + IDLE_TTL
    now[0] += IDLE_TTL - timedelta(seconds=1)
    assert sessions.lookup("i") is session
    sessions.renew(session)
    now[0] += IDLE_TTL
    assert sessions.lookup("i") is None
    assert session.ended.is_set()  # its terminals close
    short = _session(sessions, now[0] + timedelta(minutes=1))
    assert short.expires == now[0] + timedelta(minutes=1)


def test_csrf_comparison() -> None:
    sessions = WebSessions()
    session = _session(sessions, datetime.now(UTC) + timedelta(hours=1))
    assert sessions.csrf_ok(session, "token")
    assert not sessions.csrf_ok(session, "")
    assert not sessions.csrf_ok(session, "tokem")


async def test_sign_ups_are_limited_per_address_and_per_link() -> None:
    """The web UI's middlewares in front of a stand-in handler: 60 sign-ups from one address
    pass (a team onboarding behind one NAT; starting one, ``signup/begin``, is not counted),
    the 61st is refused with 429; ten tries with one link pass, the eleventh is refused."""
    async def accepted(_request: web.Request) -> web.Response:
        return web.json_response({})

    ui = WebUI(cast(Any, None), dict)
    app = web.Application(middlewares=[error_middleware, *ui.middlewares()])
    app.add_routes([web.post("/v1/webapi/signup", accepted),
                    web.post("/v1/webapi/signup/begin", accepted)])
    async with TestClient(TestServer(app)) as client:
        async def post(path: str, token: str) -> int:
            async with client.post(path, json={"token": token}) as response:
                return response.status
        assert [await post("/v1/webapi/signup/begin", f"b{n}") for n in range(70)] == [200] * 70
        assert [await post("/v1/webapi/signup", f"t{n}") for n in range(60)] == [200] * 60
        async with client.post("/v1/webapi/signup", json={"token": "t60"}) as refused:
            assert refused.status == 429
            assert "too many sign-ups from this address" in await refused.text()
    ui = WebUI(cast(Any, None), dict)
    app = web.Application(middlewares=[error_middleware, *ui.middlewares()])
    app.add_routes([web.post("/v1/webapi/signup/begin", accepted)])
    async with TestClient(TestServer(app)) as client:
        statuses = []
        for _ in range(11):
            async with client.post("/v1/webapi/signup/begin", json={"token": "same"}) as r:
                statuses.append(r.status)
        assert statuses == [200] * 10 + [429]
