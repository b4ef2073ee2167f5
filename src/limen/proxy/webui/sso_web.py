"""Single sign-on in the browser: the web UI's login page offers the cluster's connectors, and a
login through one ends in a web session made exactly as a password login makes it::

    POST /v1/webapi/sso/KIND/NAME/web {redirect?}   (JSON, from the login page's button)
         the proxy generates the session's key pair, auth starts the login for its public key
         (``/v1/sso/KIND/NAME/web/start``), the proxy keeps the private key for 5 minutes under
         the SHA-256 of the state and sets ``__Host-limen_sso``, a random token of this browser
         → {auth_url}: the page navigates there
    GET  /v1/webapi/sso/KIND/web/callback?state&code|error   (the provider's redirect)
         the proxy takes the key kept for the state, only if this browser's token matches, and
         asks auth to finish (``/v1/sso/KIND/web/callback`` with that public key; auth refuses a
         state started by lmsh, a foreign or replayed state, and a key that is not the one the
         login was started with, and audits each); on success the web session and its cookie,
         and a redirect to the page asked for; else an error page and no session

KIND is ``oidc`` or ``github``; ``web_redirect_url`` of the connector must be this proxy's
``/v1/webapi/sso/KIND/web/callback``. The token ties the callback to the browser that started
the login, so a code delivered to someone else's browser (login CSRF) logs nobody in. Nothing of
the provider's answer is logged. Mounted by ``limen.proxy.webui.mount``.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, quote, urlsplit

from aiohttp import web

from limen.auth.client import AuthClient
from limen.ca.keys import generate_private_key, private_key_to_openssh, public_key_to_openssh
from limen.errors import BadParameter, LimenError, LimitExceeded
from limen.net.http import json_body
from limen.proxy.webui.ratelimit import RateLimiter
from limen.proxy.webui.session_api import CERT_TTL_SECONDS
from limen.proxy.webui.sessions import WebSessions

__all__ = ["SSO_COOKIE", "WebLogins", "safe_web_path", "sso_web_routes"]

SSO_COOKIE = "__Host-limen_sso"
KINDS = ("oidc", "github")
LIFETIME_SECONDS = 300.0
MAX_WAITING = 1000
_PAGE = ("<!doctype html><html lang=en><meta charset=utf-8><title>Limen: login refused</title>"
         "<main class=card><h1>Single sign-on login refused</h1><p id=sso-error>{message}</p>"
         '<p><a href="/web/login">Back to the login page</a></p></main></html>')


def safe_web_path(value: object) -> str:
    """A path of the web UI to go to after the login (never another host)."""
    if not isinstance(value, str) or not value.startswith("/web") or value.startswith("//") \
            or "\\" in value or len(value) > 1024 or not value.isprintable():
        return "/web/"
    return value


@dataclass(frozen=True)
class _Waiting:
    kind: str
    private_key_pem: bytes
    public_key: str
    browser: str
    redirect: str
    expires: float


class WebLogins:
    """The web UI logins started on this proxy and not yet finished (memory only)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}

    @staticmethod
    def _key(state: str) -> str:
        return hashlib.sha256(state.encode()).hexdigest()

    def keep(self, state: str, *, kind: str, private_key_pem: bytes, public_key: str,
             browser: str, redirect: str) -> None:
        """Keep what the finish of ``state`` needs, for ``LIFETIME_SECONDS``."""
        now = self._clock()
        for key in [k for k, w in self._waiting.items() if w.expires <= now]:
            del self._waiting[key]
        if len(self._waiting) >= MAX_WAITING:
            raise LimitExceeded("too many single sign-on logins are waiting on this proxy; "
                                "try again in a few minutes")
        self._waiting[self._key(state)] = _Waiting(kind, private_key_pem, public_key, browser,
                                                   redirect, now + LIFETIME_SECONDS)

    def take(self, state: str, kind: str, browser: str) -> _Waiting | None:
        """What ``state``'s start kept, once, if this browser started it for ``kind``."""
        waiting = self._waiting.pop(self._key(state), None)
        if waiting is None or waiting.expires <= self._clock() or waiting.kind != kind \
                or not hmac.compare_digest(waiting.browser.encode(), browser.encode()):
            return None
        return waiting


def _error_page(message: str, status: int = 403) -> web.Response:
    response = web.Response(text=_PAGE.format(message=html.escape(message)), status=status,
                            content_type="text/html")
    response.del_cookie(SSO_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
    return response


def sso_web_routes(auth: AuthClient, sessions: WebSessions, logins: WebLogins, *,
                   by_address: RateLimiter) -> list[web.RouteDef]:

    async def start(request: web.Request) -> web.Response:
        kind, name = request.match_info["kind"], request.match_info["name"]
        if kind not in KINDS:
            raise BadParameter(f"unknown connector kind {kind!r}")
        body = await json_body(request)
        by_address.take(request.remote or "", "logins from this address")
        key = generate_private_key()
        public = public_key_to_openssh(key.public_key(), f"{name}@web")
        started = await auth.call("POST", f"/v1/sso/{kind}/{quote(name, safe='')}/web/start",
                                  {"public_key": public, "ttl_seconds": CERT_TTL_SECONDS,
                                   "remote_addr": request.remote or ""})
        auth_url = started.get("auth_url") if isinstance(started, dict) else None
        state = _state_of(auth_url)
        browser = secrets.token_urlsafe(32)
        logins.keep(state, kind=kind, private_key_pem=private_key_to_openssh(key).encode(),
                    public_key=public, browser=browser,
                    redirect=safe_web_path(body.get("redirect")))
        response = web.json_response({"auth_url": auth_url})
        # Lax: the provider's redirect back is a top-level navigation from another site
        response.set_cookie(SSO_COOKIE, browser, max_age=int(LIFETIME_SECONDS), path="/",
                            secure=True, httponly=True, samesite="Lax")
        return response

    async def callback(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        state = request.query.get("state", "")
        if kind not in KINDS or not state:
            return _error_page("This is not a single sign-on login this proxy started.", 400)
        waiting = logins.take(state, kind, request.cookies.get(SSO_COOKIE, ""))
        try:
            answer = await auth.call("POST", f"/v1/sso/{kind}/web/callback", {
                "state": state, "code": request.query.get("code", ""),
                "error": request.query.get("error", ""),
                "public_key": waiting.public_key if waiting else "",
                "remote_addr": request.remote or ""})
        except LimenError as err:
            return _error_page(str(err))
        if waiting is None:  # auth refuses a login without its key; never a session here
            return _error_page("This login was started in another browser; start again.")
        session = sessions.create(str(answer["user"]), answer, waiting.private_key_pem)
        response = web.HTTPSeeOther(waiting.redirect)
        sessions.set_cookie(response, session)
        response.del_cookie(SSO_COOKIE, path="/", secure=True, httponly=True, samesite="Lax")
        raise response

    return [web.post("/v1/webapi/sso/{kind}/{name}/web", start),
            web.get("/v1/webapi/sso/{kind}/web/callback", callback)]


def _state_of(auth_url: object) -> str:
    if not isinstance(auth_url, str):
        raise BadParameter("auth's answer to a single sign-on start is not one")
    states = parse_qs(urlsplit(auth_url).query).get("state", [])
    if len(states) != 1 or not states[0]:
        raise BadParameter("auth's authorization URL carries no state")
    return states[0]
