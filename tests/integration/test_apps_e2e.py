"""Application access end to end: a real upstream HTTP server (aiohttp, on 127.0.0.1) behind an
app agent run apart from auth (``limen start --roles app``), reached only through its reverse
tunnel; the app is a Resource applied with lmctl and served through the agent's selector.

``lmsh apps login`` then the real ``curl`` with the flags ``lmsh apps config`` prints gets the
page; the upstream verifies every ``Limen-Jwt-Assertion`` with PyJWT against the proxy's
``/.well-known/jwks.json`` (signature, aud, iss, exp); a client's spoofed assertion and
``X-Forwarded-For`` never reach it; a WebSocket echo works through it; a user whose roles have
no matching ``app_labels`` is refused and audited (``app.session.start``, L3300W); the requests
are audited in ``app.session.chunk``; a killed agent's app is unreachable at once and leaves
``lmsh apps ls``.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from limen.ca.keys import load_private_key, private_key_to_pem
from websocket_client import websocket

from .cluster import LimenCluster, LimenUser, run, wait_for

APP_HOST = "hello.apps.test"
RESOURCES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: apps-dev}
spec:
  allow:
    app_labels: {env: dev}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: no-apps}
spec:
  allow:
    node_labels: {env: dev}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {name: hello, labels: {env: dev, served-by: apart}}
spec:
  kind: app
  uri: http://127.0.0.1:%(port)d
  public_addr: hello.apps.test
  rewrite: {headers: [{name: X-Team, value: ops}]}
"""


@dataclass
class Upstream:
    """The app: records what each request carried and whether its JWT verified."""

    jwks_url: str = ""
    cafile: str = ""
    audience: str = ""
    issuer: str = ""
    seen: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    async def _jwks(self) -> dict[str, Any]:
        context = ssl.create_default_context(cafile=self.cafile)
        async with aiohttp.ClientSession() as session, session.get(
                self.jwks_url, ssl=context, timeout=aiohttp.ClientTimeout(total=10)) as answer:
            answer.raise_for_status()
            keys: dict[str, Any] = await answer.json()
            return keys

    async def _record(self, request: web.Request, body: bytes) -> dict[str, Any]:
        tokens = request.headers.getall("Limen-Jwt-Assertion", [])
        entry: dict[str, Any] = {
            "path": request.path, "tokens": tokens, "host": request.headers.get("Host"),
            "xff": request.headers.getall("X-Forwarded-For", []),
            "xfp": request.headers.get("X-Forwarded-Proto"),
            "xfh": request.headers.get("X-Forwarded-Host"),
            "team": request.headers.get("X-Team"), "cookie": request.headers.get("Cookie"),
            "body": len(body)}
        try:
            jwks = await self._jwks()
            key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(tokens[0])["kid"]]
            entry["claims"] = jwt.decode(tokens[0], key.key, algorithms=["ES256"],
                                         audience=self.audience, issuer=self.issuer,
                                         options={"require": ["exp", "iat", "aud", "iss"]})
        except Exception as err:  # the test asserts on it
            entry["error"] = f"{type(err).__name__}: {err}"
        self.seen.append(entry)
        return entry

    async def page(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        entry = await self._record(request, body)
        if "error" in entry:
            return web.Response(status=401, text=entry["error"])
        if request.path == "/big":  # streamed back in pieces, no Content-Length
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(40):
                await response.write(b"x" * 16384)
            await response.write_eof()
            return response
        return web.json_response({"hello": entry["claims"]["username"], "got": len(body)})

    async def socket(self, request: web.Request) -> web.StreamResponse:
        entry = await self._record(request, b"")
        if "error" in entry:
            return web.Response(status=401, text=entry["error"])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo: {message.data}")
        return ws


class UpstreamServer:
    """The upstream's event loop in a thread of its own (the test drives processes)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    def start(self) -> UpstreamServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/ws", self.upstream.socket)
        app.router.add_route("*", "/{tail:.*}", self.upstream.page)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.upstream.port = int(self.runner.addresses[0][1])

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Env:
    cluster: LimenCluster
    agent: LimenCluster
    upstream: Upstream
    alice: LimenUser
    bob: LimenUser
    web_port: int


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("apps")
    upstream = Upstream()
    server = UpstreamServer(upstream).start()
    config = root / "limen.yaml"
    config.write_text('auth: {proxy_server_names: ["*.apps.test"]}\n')
    cluster = LimenCluster(root / "cluster", "appstest", ["-c", str(config)])
    agent: LimenCluster | None = None
    try:
        cluster.start()
        resources = root / "resources.yaml"
        resources.write_text(RESOURCES % {"port": upstream.port})
        cluster.lmctl("apply", "-f", resources)
        alice = cluster.signed_up_user("alice", roles=["apps-dev"])
        bob = cluster.signed_up_user("bob", roles=["no-apps"])
        for person in (alice, bob):
            person.login()
        token = cluster.lmctl_json("tokens", "add", "--type", "app", "--ttl", "5m")
        agent_config = root / "agent.yaml"
        agent_config.write_text("app: {resources: [{labels: {served-by: apart}}]}\n")
        agent = LimenCluster(root / "agent", "appstest", [
            "--roles", "app", "-c", str(agent_config), "--proxy", cluster.web,
            "--token", token["token"], "--ca-pin", token["ca_pin"]])
        agent.start()
        web_port = int(cluster.web.rpartition(":")[2])
        upstream.jwks_url = f"https://127.0.0.1:{web_port}/.well-known/jwks.json"
        upstream.audience = f"http://127.0.0.1:{upstream.port}"
        upstream.issuer = "appstest"
        wait_for(lambda: "hello" in _listed(alice), 30.0, "the app agent's heartbeat")
        upstream.cafile = _login(alice)[5]
        yield Env(cluster, agent, upstream, alice, bob, web_port)
    finally:
        try:
            if agent is not None:
                agent.kill()
            cluster.stop()
        finally:
            cluster.kill()
            server.stop()


def _listed(user: LimenUser) -> set[str]:
    return {a["name"] for a in json.loads(user.lmsh("apps", "ls", "-o", "json").stdout)["items"]}


def _curl(env: Env, flags: list[str], *extra: str, check: bool = True) -> Any:
    resolve = f"{APP_HOST}:{env.web_port}:127.0.0.1"
    return run(["curl", "-sS", "--max-time", "20", "--resolve", resolve, *extra, *flags],
               env=env.alice.env, check=check)


def _login(user: LimenUser) -> list[str]:
    user.lmsh("apps", "login", "hello")
    return shlex.split(user.lmsh("apps", "config", "hello").stdout)


def test_curl_gets_the_page_with_a_verified_jwt_and_no_spoofed_headers(env: Env) -> None:
    flags = _login(env.alice)
    assert flags[-1] == f"https://{APP_HOST}:{env.web_port}/"
    env.upstream.seen.clear()
    page = _curl(env, flags, "-H", "Limen-Jwt-Assertion: forged.by.client",
                 "-H", "X-Forwarded-For: 6.6.6.6", "-H", "Cookie: limen_app_session=x; a=b")
    assert json.loads(page.stdout) == {"hello": "alice", "got": 0}
    seen = env.upstream.seen[-1]
    assert len(seen["tokens"]) == 1
    assert seen["tokens"][0] != "forged.by.client"
    assert seen["claims"]["sub"] == "alice"
    assert seen["claims"]["roles"] == ["apps-dev"]
    assert seen["claims"]["exp"] - seen["claims"]["iat"] <= 60
    assert seen["xff"] == ["127.0.0.1"]
    assert (seen["xfp"], seen["xfh"]) == ("https", f"{APP_HOST}:{env.web_port}")
    assert seen["host"] == f"127.0.0.1:{env.upstream.port}"
    assert seen["team"] == "ops"
    assert seen["cookie"] == "a=b"  # Limen's app session cookie is not the app's
    # a body streamed up, and a response streamed down without a length
    body = env.alice.home / "body.bin"
    body.write_bytes(b"y" * 300_000)
    sent = _curl(env, flags[:-1], "--data-binary", f"@{body}", flags[-1] + "upload")
    assert json.loads(sent.stdout)["got"] == 300_000
    big = _curl(env, flags[:-1], flags[-1] + "big")
    assert big.stdout == "x" * 16384 * 40
    start = wait_for(lambda: [e for e in env.cluster.audit("app.session.start", user="alice")
                              if e.get("success", True)], 15.0, "app.session.start")
    assert start[0]["app"] == "hello"
    chunks = wait_for(lambda: env.cluster.audit("app.session.chunk", user="alice"), 15.0,
                      "app.session.chunk")
    requests = [r for c in chunks for r in c["requests"]]
    upload = next(r for r in requests if r["path"] == "/upload")
    assert (upload["method"], upload["status"], upload["bytes_in"]) == ("POST", 200, 300_000)


def test_a_websocket_echo_goes_through(env: Env) -> None:
    flags = _login(env.alice)
    cert, key, ca = flags[1], flags[3], flags[5]

    async def echo() -> str:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        async with websocket(f"https://127.0.0.1:{env.web_port}/ws", context,
                             {"Host": f"{APP_HOST}:{env.web_port}"}, APP_HOST) as ws:
            await ws.send_str("ping")
            message = await ws.receive(timeout=10)
            return str(message.data)

    assert asyncio.run(echo()) == "echo: ping"
    assert env.upstream.seen[-1]["path"] == "/ws"
    assert env.upstream.seen[-1]["claims"]["sub"] == "alice"


def test_a_user_without_app_labels_is_refused_and_audited(env: Env) -> None:
    bob = env.bob
    assert "hello" not in _listed(bob)
    assert bob.lmsh("apps", "login", "hello", check=False).returncode != 0
    # bob presents his login certificate to the app's address: refused, audited
    pkcs8 = _pkcs8_key(bob)
    tls = bob.key_dir / "bob.crt"
    ca = env.upstream.cafile
    refused = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                   "--resolve", f"{APP_HOST}:{env.web_port}:127.0.0.1", "--cert", str(tls),
                   "--key", str(pkcs8), "--cacert", ca, f"https://{APP_HOST}:{env.web_port}/"],
                  env=bob.env)
    assert refused.stdout == "403"
    denied = wait_for(lambda: [e for e in env.cluster.audit("app.session.start", user="bob")
                               if e.get("success") is False], 15.0, "bob's refusal audited")
    assert denied[-1]["code"] == "L3300W"
    assert denied[-1]["app"] == "hello"
    # no certificate at all: a browser is sent to the login page, a script gets 401
    browser = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                   "-H", "Accept: text/html", "--resolve",
                   f"{APP_HOST}:{env.web_port}:127.0.0.1", "--cacert", ca,
                   f"https://{APP_HOST}:{env.web_port}/x"], env=bob.env)
    code, location = browser.stdout.split(" ", 1)
    assert code == "302"
    assert location.startswith(f"https://127.0.0.1:{env.web_port}/web/login?redirect=")
    assert location.endswith(f"hello.apps.test:{env.web_port}/x")  # curl shows it decoded


def _pkcs8_key(user: LimenUser) -> Path:
    key = load_private_key((user.key_dir / user.name).read_bytes())
    path = user.home / f"{user.name}-key.pem"
    path.write_text(private_key_to_pem(key))
    path.chmod(0o600)
    return path


def test_a_browser_gets_an_app_session_cookie_for_the_app_host_only(env: Env) -> None:
    alice = env.alice
    ca = env.upstream.cafile
    login = ["--cert", str(alice.key_dir / "alice.crt"), "--key", str(_pkcs8_key(alice)),
             "--cacert", ca]
    created = run(["curl", "-sS", "--fail-with-body", *login, "-H",
                   "Content-Type: application/json", "--data",
                   json.dumps({"app": "hello", "path": "/after?x=1"}),
                   f"https://127.0.0.1:{env.web_port}/v1/webapi/apps/session"], env=alice.env)
    redirect = json.loads(created.stdout)["redirect"]
    assert redirect.startswith(f"https://{APP_HOST}:{env.web_port}/__limen/app-session?token=")
    resolve = ["--resolve", f"{APP_HOST}:{env.web_port}:127.0.0.1", "--cacert", ca]
    raw = run(["curl", "-sS", "-o", "/dev/null", "-D", "-", *resolve, redirect],
              env=alice.env).stdout
    handed = raw.lower()
    assert handed.startswith("http/1.1 302")
    assert "\nlocation: /after?x=1\n" in handed
    cookie = next(line for line in handed.splitlines() if line.startswith("set-cookie:"))
    attributes = {a.strip().split("=")[0] for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "path", "samesite"} <= attributes
    assert "samesite=lax" in cookie
    assert "domain" not in attributes  # the app's host only
    session = next(line for line in raw.splitlines()
                   if line.lower().startswith("set-cookie:")).split(":", 1)[1].split(";")[0]
    page = run(["curl", "-sS", *resolve, "-H", f"Cookie: {session}; a=b",
                f"https://{APP_HOST}:{env.web_port}/after"], env=alice.env)
    assert json.loads(page.stdout)["hello"] == "alice"
    assert env.upstream.seen[-1]["cookie"] == "a=b"
    # the hand-over link works once
    again = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *resolve, redirect],
                env=alice.env)
    assert again.stdout == "403"
    # no open redirect: the path asked for is a path on the app's host, whatever is sent
    evil = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *login, "-H",
                "Content-Type: application/json", "--data",
                json.dumps({"app": "hello", "path": "//evil.example/"}),
                f"https://127.0.0.1:{env.web_port}/v1/webapi/apps/session"], env=alice.env)
    assert evil.stdout == "400"
    created = run(["curl", "-sS", "--fail-with-body", *login, "-H",
                   "Content-Type: application/json", "--data", json.dumps({"app": "hello"}),
                   f"https://127.0.0.1:{env.web_port}/v1/webapi/apps/session"], env=alice.env)
    tampered = json.loads(created.stdout)["redirect"].split("&next=")[0] + \
        "&next=https%3A%2F%2Fevil.example%2F"
    moved = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                 *resolve, tampered], env=alice.env)
    assert moved.stdout == f"302 https://{APP_HOST}:{env.web_port}/"
    # a made-up cookie is no session: a script gets 401
    forged = run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", *resolve, "-H",
                  "Cookie: limen_app_session=forged", f"https://{APP_HOST}:{env.web_port}/"],
                 env=alice.env)
    assert forged.stdout == "401"


def test_a_locked_users_app_certificate_is_refused_and_audited(env: Env) -> None:
    flags = _login(env.alice)
    code = ["-o", "/dev/null", "-w", "%{http_code}"]
    assert _curl(env, [*code, *flags]).stdout == "200"
    name = env.cluster.lmctl("lock", "--user", "alice", "--message", "INC-7 app review"
                             ).stdout.strip()
    try:
        refused = wait_for(lambda: (r := _curl(env, flags)).stdout.startswith("Limen: locked")
                           and r, 2.0, "the lock at the app front")
        assert refused.stdout == "Limen: locked: INC-7 app review\n"
        assert _curl(env, [*code, *flags]).stdout == "403"
        denied = wait_for(lambda: [e for e in env.cluster.audit("app.session.start",
                                                                 user="alice")
                                   if e.get("success") is False and e.get("lock") == name],
                          15.0, "the locked request audited")
        assert denied[-1]["lock_target"] == "user=alice"
        assert denied[-1]["reason"] == "locked: INC-7 app review"
    finally:
        env.cluster.lmctl("rm", f"lock/{name}")
    wait_for(lambda: _curl(env, [*code, *flags]).stdout == "200", 5.0, "the lock lifted")


def test_the_app_leaves_when_its_agent_is_killed(env: Env) -> None:
    flags = _login(env.alice)
    assert "Logged out of hello." in env.alice.lmsh("apps", "logout", "hello").stdout
    assert not Path(flags[1]).exists()
    assert not Path(flags[3]).exists()
    assert env.alice.lmsh("apps", "config", "hello", check=False).returncode != 0
    flags = _login(env.alice)
    env.agent.kill()
    gone = wait_for(lambda: _curl(env, ["-o", "/dev/null", "-w", "%{http_code}", *flags])
                    .stdout == "503", 15.0, "the app unreachable")
    assert gone
    wait_for(lambda: "hello" not in _listed(env.alice), 45.0, "hello to leave lmsh apps ls")
