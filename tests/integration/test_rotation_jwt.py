"""A rotation of the JWT CA with an app behind the proxy that verifies every
``Limen-Jwt-Assertion`` with PyJWT against the proxy's ``/.well-known/jwks.json``.

In every phase ``curl`` through the proxy gets the page (the app verified the token), and a
WebSocket to the app opened before the rotation still echoes after it: ``init``
publishes the new key without signing with it, ``update_clients`` signs with it (its own
``kid``; the proxy stops handing out the tokens of the old key it kept), ``standby`` drops the
old key from the JWKS, after which a token signed by it no longer verifies against what the
proxy publishes; a rollback signs with the old key again. Every change is audited and
``lmctl status`` shows the phase. The cluster, the app agent apart from auth and the app are
this module's own (``integration.test_apps_e2e.env``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import ssl
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import aiohttp
import jwt
import pytest

from websocket_client import websocket

from .cluster import run, wait_for
from .test_apps_e2e import APP_HOST, Env, env  # noqa: F401  (the module fixture)

T = TypeVar("T")
SWITCH_TIMEOUT = 10.0
"""The proxy reads the JWKS's signing key at most every 2 s."""


@pytest.fixture(scope="module")
def flags(env: Env) -> list[str]:  # noqa: F811
    env.alice.lmsh("apps", "login", "hello")
    return shlex.split(env.alice.lmsh("apps", "config", "hello").stdout)


def published(env: Env) -> dict[str, Any]:  # noqa: F811
    """The JWKS the proxy publishes, as an app fetches it."""
    answer = run(["curl", "-sS", "--fail", "--max-time", "20", "--cacert", env.upstream.cafile,
                  env.upstream.jwks_url], env=env.alice.env)
    keys: dict[str, Any] = json.loads(answer.stdout)
    return keys


def kids(env: Env) -> list[str]:  # noqa: F811
    return [k["kid"] for k in published(env)["keys"]]


def visit(env: Env, flags: list[str]) -> tuple[str, str]:  # noqa: F811
    """``curl`` through the proxy: the app verified the token (else the page is a 401); the
    token and its ``kid``."""
    resolve = f"{APP_HOST}:{env.web_port}:127.0.0.1"
    page = run(["curl", "-sS", "--fail-with-body", "--max-time", "20", "--resolve", resolve,
                *flags], env=env.alice.env)
    assert json.loads(page.stdout)["hello"] == "alice"
    token = env.upstream.seen[-1]["tokens"][0]
    return token, str(jwt.get_unverified_header(token)["kid"])


def rotate(env: Env, *args: str) -> str:  # noqa: F811
    return env.cluster.lmctl("auth", "rotate", "--type", "jwt", *args).stdout


def signed_by(env: Env, flags: list[str], kid: str) -> str:  # noqa: F811
    """Wait until the app gets a token of ``kid`` (every request on the way verified)."""
    def token_of_kid() -> str:
        token, signer = visit(env, flags)
        return token if signer == kid else ""

    found: str = wait_for(token_of_kid, SWITCH_TIMEOUT, f"a token signed by {kid}")
    return found


class OpenSocket:
    """A WebSocket to the app through the proxy, opened now and kept open, driven from the
    test through an event loop in a thread of its own."""

    def __init__(self, env: Env, flags: list[str]) -> None:  # noqa: F811
        cert, key, ca = flags[1], flags[3], flags[5]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._stack = contextlib.AsyncExitStack()

        async def connect() -> aiohttp.ClientWebSocketResponse:
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)
            return await self._stack.enter_async_context(websocket(
                f"https://127.0.0.1:{env.web_port}/ws", context,
                {"Host": f"{APP_HOST}:{env.web_port}"}, APP_HOST))

        self.ws = self._run(connect())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(20)

    def echo(self, text: str) -> str:
        async def exchange() -> str:
            await self.ws.send_str(text)
            return str((await self.ws.receive(timeout=10)).data)
        return self._run(exchange())

    def close(self) -> None:
        try:
            self._run(self._stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def test_a_full_jwt_ca_rotation_keeps_the_app_verifying(
        env: Env, flags: list[str]) -> None:  # noqa: F811
    old_token, old = visit(env, flags)
    assert kids(env) == [old]
    socket = OpenSocket(env, flags)
    try:
        assert socket.echo("before") == "echo: before"
        _walk_a_rotation(env, flags, old, old_token)
        assert socket.echo("after") == "echo: after"  # opened before the rotation
    finally:
        socket.close()


def _walk_a_rotation(env: Env, flags: list[str], old: str,  # noqa: F811
                     old_token: str) -> None:
    """init, update_clients, update_servers, standby, checking the JWKS and the tokens."""
    assert "phase init" in rotate(env, "--manual")
    (new,) = [k for k in kids(env) if k != old]
    assert kids(env) == [old, new]  # published before it signs
    assert visit(env, flags)[1] == old

    rotate(env, "--phase", "update_clients")
    assert kids(env) == [new, old]
    new_token = signed_by(env, flags, new)
    assert visit(env, flags)[1] == new

    rotate(env, "--phase", "update_servers")
    assert visit(env, flags)[1] == new
    assert "CA jwt rotation: update_servers" in env.cluster.lmctl("status").stdout

    rotate(env, "--phase", "standby")
    assert kids(env) == [new]
    assert visit(env, flags)[1] == new
    keys = jwt.PyJWKSet.from_dict(published(env))
    with pytest.raises(KeyError):  # a token of the old key no longer verifies
        keys[jwt.get_unverified_header(old_token)["kid"]]
    assert jwt.decode(new_token, keys[new].key, algorithms=["ES256"],
                      audience=env.upstream.audience, issuer=env.upstream.issuer,
                      options={"verify_exp": False})["sub"] == "alice"
    moves = [(e["from"], e["to"]) for e in env.cluster.audit("ca.rotation")
             if e.get("ca_type") == "jwt"]
    assert moves[-4:] == [("standby", "init"), ("init", "update_clients"),
                          ("update_clients", "update_servers"), ("update_servers", "standby")]


def test_rollback_signs_with_the_old_key_again(env: Env, flags: list[str]) -> None:  # noqa: F811
    _, old = visit(env, flags)
    rotate(env, "--manual")
    (new,) = [k for k in kids(env) if k != old]
    rotate(env, "--phase", "update_clients")
    signed_by(env, flags, new)

    assert "phase rollback" in rotate(env, "--rollback")
    assert kids(env) == [old, new]  # the new key stays published until standby
    signed_by(env, flags, old)

    rotate(env, "--phase", "standby")
    assert kids(env) == [old]
    assert visit(env, flags)[1] == old
    assert [e["to"] for e in env.cluster.audit("ca.rotation")
            if e.get("ca_type") == "jwt"][-2:] == ["rollback", "standby"]
