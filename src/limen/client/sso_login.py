"""``lmsh login --auth NAME``: single sign-on through the proxy and a loopback redirect.

    0. GET /v1/webapi/sso/connectors: the kind of NAME (KIND: oidc or github)
    1. listen on 127.0.0.1 at a random port (the redirect target, RFC 8252 7.3)
    2. POST /v1/webapi/sso/KIND/NAME/start {public_key, port} → the provider's URL
    3. show the URL (and open a browser when asked); the person logs in at the provider
    4. the browser comes back to http://127.0.0.1:PORT/...?code&state; the listener answers
       with a page saying the window may be closed, and takes only the ``state`` of step 2
    5. POST /v1/webapi/sso/KIND/callback {state, code} → the certificates for our key

The private key never leaves the machine: auth issues the certificates for the public key of
step 2, whoever brings the code. The listener serves one redirect, for at most 5 minutes (the
life of a started login). Called by ``limen.cli.lmsh_login``.
"""

from __future__ import annotations

import asyncio
import html
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from aiohttp import web

from limen.client.webapi import WebApi
from limen.errors import AccessDenied, BadParameter, NotFound

__all__ = ["SSOAnswer", "connector_kind", "sso_login"]

WAIT_SECONDS = 300.0
_DONE_PAGE = ("<!doctype html><meta charset=utf-8><title>Limen</title>"
              "<p>{message}</p><p>You can close this window and return to the terminal.</p>")


@dataclass(frozen=True)
class SSOAnswer:
    """The provider's redirect: a code, or an error it reported."""

    code: str
    error: str


class _Loopback:
    """The one-shot HTTP listener the provider's redirect lands on."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[SSOAnswer] = asyncio.get_running_loop().create_future()
        self.state = ""
        self.path = "/callback"
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
            app = web.Application()
            app.router.add_get("/{tail:.*}", self._redirected)
            self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self.runner.setup()
            await web.SockSite(self.runner, sock).start()
        except BaseException:
            sock.close()
            raise
        return self.port

    async def _redirected(self, request: web.Request) -> web.Response:
        query = request.query
        if request.path != self.path or query.get("state") != self.state or self.answer.done():
            return web.Response(status=404, text="not the login this lmsh is waiting for")
        error = query.get("error", "")
        self.answer.set_result(SSOAnswer(query.get("code", ""), error))
        message = "Login refused by the identity provider." if error else \
            "Login received: lmsh is finishing it."
        return web.Response(text=_DONE_PAGE.format(message=html.escape(message)),
                            content_type="text/html")

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


async def connector_kind(api: WebApi, connector: str) -> str:
    """The kind (``oidc``, ``github``) of the connector named ``connector``, as the proxy
    lists them; ``NotFound`` when there is none, ``BadParameter`` when the name is both."""
    listed = await api.http.call("GET", "/v1/webapi/sso/connectors")
    items = listed.get("items") if isinstance(listed, dict) else None
    kinds = sorted({str(i.get("kind")) for i in items or [] if isinstance(i, dict)
                    and i.get("name") == connector and i.get("kind") in ("oidc", "github")})
    if not kinds:
        raise NotFound(f"no single sign-on connector {connector!r} (lmctl get "
                       "oidcconnectors,githubconnectors lists them)")
    if len(kinds) > 1:
        raise BadParameter(f"{connector!r} names both an OIDC and a GitHub connector; "
                           "rename one of them")
    return kinds[0]


async def sso_login(api: WebApi, connector: str, public_key: str, ttl_seconds: int | None,
                    show_url: Callable[[str], None]) -> dict[str, Any]:
    """Log in through ``connector``; ``show_url`` gets the provider's URL (prints it, opens
    a browser). The answer is the login's, as ``WebApi.login`` gives it."""
    kind = await connector_kind(api, connector)
    listener = _Loopback()
    try:
        port = await listener.start()
        body: dict[str, Any] = {"public_key": public_key, "port": port}
        if ttl_seconds:
            body["ttl_seconds"] = ttl_seconds
        path = f"/v1/webapi/sso/{kind}/{quote(connector, safe='')}/start"
        started = await api.http.call("POST", path, body)
        if not isinstance(started, dict) or not isinstance(started.get("auth_url"), str):
            raise BadParameter("the proxy's answer to the single sign-on start is not one")
        states = parse_qs(urlsplit(started["auth_url"]).query).get("state", [])
        redirect = urlsplit(str(started.get("redirect_uri", "")))
        if len(states) != 1 or redirect.port != port:
            raise AccessDenied("the authorization URL does not redirect to this lmsh")
        listener.state, listener.path = states[0], redirect.path or "/callback"
        show_url(started["auth_url"])
        try:
            async with asyncio.timeout(WAIT_SECONDS):
                answer = await asyncio.shield(listener.answer)
        except TimeoutError:
            raise AccessDenied("no login came back from the identity provider within 5 "
                               "minutes") from None
    finally:
        await listener.close()
    finished: dict[str, Any] = await api.http.call(
        "POST", f"/v1/webapi/sso/{kind}/callback",
        {"state": listener.state, "code": answer.code, "error": answer.error})
    return finished
