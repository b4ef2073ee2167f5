"""Attacks on the web UI's API, performed against a real proxy (no browser needed): a call
that changes state without the session's CSRF token (403, audited), the session cookie's
flags, an oversized body (413), a 64-deep JSON body (400), a WebSocket from another origin
(403, audited) or without the CSRF token in its first message, login attempts beyond the rate
limit (429), the security headers of the pages, and a lock on a logged-in user (the open
terminal ends, the session's calls and a new login are refused, audited; lifted: logins work)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from integration.cluster import LimenUser, wait_for
from websocket_client import websocket

from .conftest import HOST, LOGIN, WebSite

DEADLINE = 20.0
COOKIE = "__Host-limen_session"


@pytest.fixture(scope="module")
def victim(web_site: WebSite) -> LimenUser:
    return web_site.cluster.signed_up_user("victim", roles=["webdev"], logins=[LOGIN])


@pytest.fixture(scope="module")
def logged_in(web_site: WebSite, victim: LimenUser) -> dict[str, str]:
    """A web session of ``victim``: the Set-Cookie header, the cookie and the CSRF token."""
    status, headers, body = web_site.request(
        "POST", "/v1/webapi/sessions",
        json.dumps({"user": "victim", "password": victim.password, "otp": victim.take_code()}),
        {"Content-Type": "application/json"})
    assert status == 200, body
    cookie = re.match(rf"{COOKIE}=([^;]+)", headers["set-cookie"])
    assert cookie, headers["set-cookie"]
    return {"set_cookie": headers["set-cookie"], "cookie": f"{COOKIE}={cookie.group(1)}",
            "csrf": json.loads(body)["csrf_token"]}


def _denied(site: WebSite, action: str) -> list[dict[str, Any]]:
    return [e for e in site.cluster.audit("access.denied", user="victim")
            if action in str(e.get("action", ""))]


def test_session_cookie_flags(logged_in: dict[str, str]) -> None:
    flags = [part.strip().lower() for part in logged_in["set_cookie"].split(";")]
    assert flags[0].startswith(f"{COOKIE.lower()}=")
    assert "httponly" in flags
    assert "secure" in flags
    assert "samesite=strict" in flags
    assert "path=/" in flags
    assert not [f for f in flags if f.startswith("domain=")]  # __Host-: this host only
    max_age = next(int(f.split("=")[1]) for f in flags if f.startswith("max-age="))
    assert 0 < max_age <= 15 * 60  # short-lived, renewed by the page


def test_state_change_without_csrf_token_is_refused_and_audited(
        web_site: WebSite, logged_in: dict[str, str]) -> None:
    cookie = {"Cookie": logged_in["cookie"]}
    for headers in (cookie, {**cookie, "X-CSRF-Token": "forged"}):
        status, _h, body = web_site.request("POST", "/v1/webapi/sessions/renew", "{}",
                                            {**headers, "Content-Type": "application/json"})
        assert status == 403, body
        assert b"CSRF" in body
    status, _h, _b = web_site.request("DELETE", "/v1/webapi/sessions", headers=cookie)
    assert status == 403
    wait_for(lambda: len(_denied(web_site, "/v1/webapi/sessions")) >= 3, DEADLINE,
             "the refused calls in the audit log")
    # the session survived the forged logout, and works with its token
    status, _h, _b = web_site.request("GET", "/v1/webapi/sessions", headers=cookie)
    assert status == 200
    status, _h, _b = web_site.request("POST", "/v1/webapi/sessions/renew", "{}", {
        **cookie, "X-CSRF-Token": logged_in["csrf"], "Content-Type": "application/json"})
    assert status == 200


def test_oversized_body_is_413(web_site: WebSite) -> None:
    body = json.dumps({"user": "x", "password": "p" * (100 << 10)})
    status, _h, _b = web_site.request("POST", "/v1/webapi/sessions", body,
                                      {"Content-Type": "application/json"})
    assert status == 413


def test_deeply_nested_json_is_400(web_site: WebSite) -> None:
    body = '{"user": ' + "[" * 64 + "]" * 64 + "}"
    status, _h, answer = web_site.request("POST", "/v1/webapi/sessions", body,
                                          {"Content-Type": "application/json"})
    assert status == 400
    assert b"nested more than 32 levels deep" in answer
    assert b"Traceback" not in answer


def _upgrade(origin: str, cookie: str) -> dict[str, str]:
    return {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": origin, "Cookie": cookie}


def test_websocket_from_another_origin_is_refused_and_audited(
        web_site: WebSite, logged_in: dict[str, str]) -> None:
    status, _h, body = web_site.request(
        "GET", "/v1/webapi/terminal", headers=_upgrade("https://evil.example", logged_in["cookie"]))
    assert status == 403, body
    assert b"Origin" in body
    wait_for(lambda: [e for e in _denied(web_site, "web.terminal")
                      if e.get("origin") == "https://evil.example"], DEADLINE,
             "the refused WebSocket in the audit log")


async def test_websocket_without_csrf_token_is_refused_and_audited(
        web_site: WebSite, logged_in: dict[str, str]) -> None:
    before = len(_denied(web_site, "web.terminal"))
    context = ssl.create_default_context(cadata=web_site.ca_pem.decode())
    async with websocket(f"wss://{web_site.cluster.web}/v1/webapi/terminal", context,
                         {"Origin": web_site.origin, "Cookie": logged_in["cookie"]}) as ws:
        await ws.send_str(json.dumps({"csrf": "forged", "node": "dev-box", "login": LOGIN}))
        message = await ws.receive(timeout=DEADLINE)
        assert message.type is aiohttp.WSMsgType.TEXT
        assert json.loads(message.data) == {"error": "missing or wrong CSRF token"}
    wait_for(lambda: len(_denied(web_site, "web.terminal")) > before, DEADLINE,
             "the refused handshake in the audit log")


def test_pages_carry_the_security_headers(web_site: WebSite) -> None:
    status, headers, body = web_site.request("GET", "/web/login")
    assert status == 200
    assert b'<div id="app">' in body or b'id="app"' in body
    csp = headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval';" in csp  # no JavaScript eval, no inline
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'self'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["strict-transport-security"].startswith("max-age=")
    assert headers["cache-control"] == "no-store"
    asset = re.search(rb'src="(/web/assets/[^"]+\.js)"', body)
    assert asset
    status, headers, _b = web_site.request("GET", asset.group(1).decode())
    assert status == 200
    assert "immutable" in headers["cache-control"]
    assert headers["content-security-policy"]
    status, headers, _b = web_site.request("GET", "/web/../../etc/passwd")
    assert status in (200, 404)  # never a file outside the bundle
    assert b"root:" not in _b


@contextlib.asynccontextmanager
async def _terminal(site: WebSite, session: dict[str, str], node: str, *, cols: int = 100,
                    rows: int = 30) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    context = ssl.create_default_context(cadata=site.ca_pem.decode())
    async with websocket(f"wss://{site.cluster.web}/v1/webapi/terminal", context,
                         {"Origin": site.origin, "Cookie": session["cookie"]}) as ws:
        await ws.send_str(json.dumps({"csrf": session["csrf"], "node": node, "login": LOGIN,
                                      "cols": cols, "rows": rows}))
        yield ws


async def _read_until(ws: aiohttp.ClientWebSocketResponse, pattern: str) -> str:
    seen = ""
    try:
        async with asyncio.timeout(DEADLINE):
            while not re.search(pattern, seen):
                message = await ws.receive()
                assert message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), \
                    (message, seen)
                seen += message.data.decode(errors="replace") \
                    if isinstance(message.data, bytes) else message.data
    except TimeoutError:
        raise AssertionError(f"no {pattern!r} from the terminal in {seen!r}") from None
    return seen


async def test_terminal_follows_resizes(web_site: WebSite, logged_in: dict[str, str]) -> None:
    async with _terminal(web_site, logged_in, HOST, cols=100, rows=30) as ws:
        await _read_until(ws, r'"connected"')
        await ws.send_bytes(b"stty size\n")
        await _read_until(ws, r"30 100\r\n")
        await ws.send_str(json.dumps({"resize": [120, 40]}))
        await ws.send_bytes(b"stty size\n")
        await _read_until(ws, r"40 120\r\n")
        await ws.send_bytes(b"exit\n")
        await _read_until(ws, r'"exit": 0')


async def test_terminal_to_a_server_the_roles_refuse_is_an_error(
        web_site: WebSite, logged_in: dict[str, str]) -> None:
    async with _terminal(web_site, logged_in, "build-box") as ws:  # env=staging: not webdev's
        answer = await _read_until(ws, r'"error"')
        assert "build-box" in answer or "not allowed" in answer or "unknown" in answer, answer
        assert '"connected"' not in answer


STRICT_ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: web-strict}
spec: {options: {lock: strict}}
"""


def _web_login(site: WebSite, user: LimenUser) -> tuple[int, dict[str, str], bytes]:
    return site.request("POST", "/v1/webapi/sessions", json.dumps(
        {"user": user.name, "password": user.password, "otp": user.take_code()}),
        {"Content-Type": "application/json"})


async def test_a_lock_ends_the_web_terminal_and_refuses_the_session_until_lifted(
        web_site: WebSite, tmp_path: Any) -> None:
    """A lock on the role ``web-strict`` (``lock: strict``): the open terminal of a user
    holding it ends, that web session's next call and another holder's login are refused;
    once lifted a third holder logs in (three users: one TOTP code each, no waiting for the
    next code step)."""
    cluster = web_site.cluster
    role = tmp_path / "strict.yaml"
    role.write_text(STRICT_ROLE, encoding="utf-8")
    cluster.lmctl("apply", "-f", role)
    first, second, third = (
        cluster.signed_up_user(name, roles=["webdev", "web-strict"], logins=[LOGIN])
        for name in ("lockee1", "lockee2", "lockee3"))
    status, headers, body = _web_login(web_site, first)
    assert status == 200, body
    cookie = re.match(rf"{COOKIE}=([^;]+)", headers["set-cookie"])
    assert cookie
    session = {"cookie": f"{COOKIE}={cookie.group(1)}", "csrf": json.loads(body)["csrf_token"]}
    async with _terminal(web_site, session, HOST) as ws:
        await _read_until(ws, r'"connected"')
        name = cluster.lmctl("lock", "--role", "web-strict", "--message", "INC-9 web"
                             ).stdout.strip()
        locked_at = asyncio.get_running_loop().time()
        async with asyncio.timeout(DEADLINE):  # lock: strict: the shell ends at once
            while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE,
                                                     aiohttp.WSMsgType.CLOSED):
                pass
        assert asyncio.get_running_loop().time() - locked_at < 3.0
    status, _h, body = wait_for(  # the proxy reads the locks again every half second
        lambda: (r := web_site.request("GET", "/v1/webapi/sessions",
                                       headers={"Cookie": session["cookie"]}))[0] != 200
        and r, 2.0, "the web session refused")
    assert status == 403
    assert json.loads(body)["error"]["message"] == "locked: INC-9 web"
    status, _h, body = _web_login(web_site, second)  # auth issues no login certificate
    assert status == 403
    assert json.loads(body)["error"]["message"] == "locked: INC-9 web"
    events = wait_for(lambda: [e for e in cluster.audit("access.denied", user="lockee1")
                               if e.get("lock") == name], DEADLINE, "the refusals audited")
    actions = {str(e.get("action")) for e in events}
    assert "session" in actions
    assert "web.get /v1/webapi/sessions" in actions
    status, _h, body = web_site.request(  # logging out is always allowed
        "DELETE", "/v1/webapi/sessions",
        headers={"Cookie": session["cookie"], "X-CSRF-Token": session["csrf"]})
    assert status == 200, body
    cluster.lmctl("rm", f"lock/{name}")
    status, _h, body = wait_for(lambda: (r := _web_login(web_site, third))[0] == 200 and r,
                                DEADLINE, "a new login after the lock is lifted")
    assert json.loads(body)["user"] == "lockee3"


def test_login_attempts_beyond_the_rate_limit_are_429(web_site: WebSite) -> None:
    """Per user (auth's own lockout answers too) and per client address (the proxy's limit);
    last in the module: it spends this address's login budget."""
    def attempt(user: str) -> tuple[int, str]:
        status, _h, body = web_site.request(
            "POST", "/v1/webapi/sessions",
            json.dumps({"user": user, "password": "guess", "otp": "123456"}),
            {"Content-Type": "application/json"})
        return status, json.loads(body)["error"]["message"]

    same_user = [attempt("nobody-here") for _ in range(11)]
    assert same_user[0][0] == 403
    assert same_user[-1][0] == 429
    answers = [attempt(f"ghost-{n}") for n in range(21)]
    limited = [message for status, message in answers if status == 429]
    assert limited
    assert "too many logins from this address" in limited[0]
