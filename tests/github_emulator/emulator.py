"""An emulator of GitHub's OAuth app flow and the REST calls Limen makes, for the tests.

It stands in for github.com and api.github.com as ``tests/k8s_emulator`` stands in for
kube-apiserver, following GitHub's documented behaviour:

    GET  /login/oauth/authorize?client_id&redirect_uri&state&code_challenge[_method]
         a login form (HTML) for a known client; POST /session signs in and redirects to
         redirect_uri?code=...&state=... (a loopback redirect_uri may use any port, as GitHub
         allows for loopback callback URLs)
    POST /login/oauth/access_token  client_id, client_secret, code, redirect_uri,
         code_verifier → JSON {access_token, token_type, scope} with Accept: application/json;
         a refused code is HTTP 200 with {"error": "bad_verification_code"}, as GitHub answers;
         a code is used once, lives 10 minutes and needs the PKCE verifier of its challenge
    GET  /api/user            (Authorization: Bearer TOKEN) → {login, id, name, email}
    GET  /api/user/teams?per_page&page  the person's teams, paginated, with a ``Link`` header
         (rel="next", rel="last") as GitHub sends it

People are :class:`Person` entries (the form's login → what ``/user`` answers and the teams);
``failing`` makes a route answer HTTP 500 or a bad answer (an emulator answering an error).
:class:`GitHubEmulator` runs the server on 127.0.0.1 in a thread of its own (usable from sync
and async tests alike); ``endpoint_url`` and ``api_endpoint_url`` are what a GitHubConnector
names. Used by ``tests/integration/test_github_sso*.py`` and ``tests/web/test_web_sso.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import re
import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlencode, urlsplit

from aiohttp import web

__all__ = ["CLIENT_ID", "CLIENT_SECRET", "GitHubEmulator", "Person", "Team",
           "follow_to_callback"]

CLIENT_ID = "Iv1.limen-test-app"
CLIENT_SECRET = "github-test-secret-0123456789abcdef"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]*)" value="([^"]*)">')


@dataclass(frozen=True)
class Team:
    organization: str
    slug: str


@dataclass(frozen=True)
class Person:
    """Someone who signs in as ``login``; ``/user`` answers ``answers_login`` when set (a
    crafted login), else ``login``."""

    login: str
    teams: tuple[Team, ...] = ()
    name: str = ""
    email: str = ""
    answers_login: str = ""


@dataclass
class _Grant:
    person: str
    redirect_uri: str
    challenge: str
    used: bool = False


@dataclass
class _State:
    people: dict[str, Person]
    codes: dict[str, _Grant] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    exchanges: list[dict[str, str]] = field(default_factory=list)
    """Every token request's form, without the secret (the tests read what Limen sent)."""


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _loopback_match(registered: str, asked: str) -> bool:
    """GitHub's rule: the redirect_uri must be the registered callback; on a loopback host any
    port is accepted."""
    reg, got = urlsplit(registered), urlsplit(asked)
    if reg.hostname in ("127.0.0.1", "localhost", "::1"):
        return (got.scheme, got.hostname, got.path) == (reg.scheme, reg.hostname, reg.path)
    return registered == asked


class _App:
    def __init__(self, state: _State, callbacks: tuple[str, ...]) -> None:
        self.state = state
        self.callbacks = callbacks

    def _fail(self, route: str) -> web.Response | None:
        if route in self.state.failing:
            return web.json_response({"message": "Server Error"}, status=500)
        return None

    async def authorize(self, request: web.Request) -> web.Response:
        query = request.query
        if query.get("client_id") != CLIENT_ID:
            return web.Response(status=404, text="unknown OAuth app")
        if not any(_loopback_match(c, query.get("redirect_uri", "")) for c in self.callbacks):
            return web.Response(status=400, text="The redirect_uri is not associated with "
                                "this application.")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return web.Response(status=400, text="PKCE S256 required by this emulator")
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" '
                         f'value="{html.escape(v)}">' for k, v in query.items())
        page = ("<!doctype html><title>Sign in to GitHub</title>"
                '<form method="post" action="/session">'
                f'{hidden}<input name="login" id="login_field" aria-label="Username">'
                '<input name="password" type="password" id="password" aria-label="Password">'
                '<input type="submit" name="commit" value="Sign in"></form>')
        return web.Response(text=page, content_type="text/html")

    async def session(self, request: web.Request) -> web.Response:
        form = await request.post()
        login = str(form.get("login", ""))
        if login not in self.state.people:
            return web.Response(status=401, text="Incorrect username or password.")
        code = secrets.token_hex(10)
        self.state.codes[code] = _Grant(login, str(form.get("redirect_uri", "")),
                                        str(form.get("code_challenge", "")))
        target = str(form.get("redirect_uri", ""))
        separator = "&" if "?" in target else "?"
        raise web.HTTPFound(f"{target}{separator}"
                            + urlencode({"code": code, "state": str(form.get("state", ""))}))

    async def access_token(self, request: web.Request) -> web.Response:
        failed = self._fail("access_token")
        if failed is not None:
            return failed
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.state.exchanges.append({k: v for k, v in form.items() if k != "client_secret"})
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response({"error": "incorrect_client_credentials"})
        grant = self.state.codes.get(form.get("code", ""))
        if grant is None or grant.used or grant.redirect_uri != form.get("redirect_uri") \
                or _challenge(form.get("code_verifier", "")) != grant.challenge:
            return web.json_response({"error": "bad_verification_code",
                                      "error_description": "The code passed is incorrect or "
                                      "expired."})
        grant.used = True
        token = "gho_" + secrets.token_hex(16)
        self.state.tokens[token] = grant.person
        if "access_token_text" in self.state.failing:
            return web.Response(text=f"access_token={token}&scope=read%3Aorg")
        return web.json_response({"access_token": token, "token_type": "bearer",
                                  "scope": "read:org"})

    def _person(self, request: web.Request) -> Person | None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or token not in self.state.tokens:
            return None
        return self.state.people[self.state.tokens[token]]

    async def user(self, request: web.Request) -> web.Response:
        failed = self._fail("user")
        if failed is not None:
            return failed
        person = self._person(request)
        if person is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        return web.json_response({"login": person.answers_login or person.login,
                                  "id": 1000 + len(person.login),
                                  "name": person.name or None, "email": person.email or None})

    async def teams(self, request: web.Request) -> web.Response:
        failed = self._fail("teams")
        if failed is not None:
            return failed
        person = self._person(request)
        if person is None:
            return web.json_response({"message": "Bad credentials"}, status=401)
        per_page = min(int(request.query.get("per_page", "30")), 100)
        page = int(request.query.get("page", "1"))
        teams = person.teams[(page - 1) * per_page:page * per_page]
        last = max(1, -(-len(person.teams) // per_page))
        base = f"{request.scheme}://{request.host}{request.path}"
        links = []
        if page < last:
            links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
        body = [{"slug": t.slug, "name": t.slug, "organization": {"login": t.organization}}
                for t in teams]
        return web.json_response(body, headers={"Link": ", ".join(links)} if links else None)

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.get("/login/oauth/authorize", self.authorize),
            web.post("/session", self.session),
            web.post("/login/oauth/access_token", self.access_token),
            web.get("/api/user", self.user),
            web.get("/api/user/teams", self.teams),
        ])
        return app


class GitHubEmulator:
    """The emulator on a loopback port, served by a thread's event loop."""

    def __init__(self, people: list[Person],
                 callbacks: tuple[str, ...] = ("http://127.0.0.1/callback",)) -> None:
        self.state = _State({p.login: p for p in people})
        self.callbacks = callbacks
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="github-emulator", daemon=True)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(_App(self.state, self.callbacks).app(), access_log=None,
                               handle_signals=False)
        await runner.setup()
        try:
            await web.SockSite(runner, self._sock).start()
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def start(self) -> Self:
        self._thread.start()
        assert self._ready.wait(10), "the GitHub emulator did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def follow_to_callback(session: Any, auth_url: str, sign_in: str) -> str:
    """The person at the browser (an ``aiohttp.ClientSession``): open ``auth_url``, sign in as
    ``sign_in``, and return the URL GitHub redirects to (not opened)."""
    async with session.get(auth_url, allow_redirects=False) as page:
        assert page.status == 200, await page.text()
        text = await page.text()
    origin = urlsplit(auth_url)
    fields = dict(_HIDDEN.findall(text))
    form = {html.unescape(k): html.unescape(v) for k, v in fields.items()} | {
        "login": sign_in, "password": "any"}
    async with session.post(f"{origin.scheme}://{origin.netloc}/session", data=form,
                            allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        return str(answer.headers["Location"])

