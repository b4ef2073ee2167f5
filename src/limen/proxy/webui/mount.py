"""Puts the web UI into the proxy's web app (called by ``limen.proxy.web.build_web_app``):
the headers and limits (``guard``), the session API, single sign-on in the browser
(``sso_web``), the terminal, the casts, the sign-up
rate limit, the locks (``web_locks``: every call of a locked user's web session is refused
with ``locked: <message>``, audited as ``access.denied`` naming the lock) and the pages, and
:meth:`WebUI.user_cert`, the certificate a user call is made
with (the TLS client certificate of ``lmsh``, else the browser's web session, whose calls that
change state need the CSRF token).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from limen.auth.client import AuthClient
from limen.errors import LimenError
from limen.events.emitter import Emitter
from limen.events.event import make_event
from limen.net.json_limits import loads_bounded
from limen.proxy.webui.casts import cast_route
from limen.proxy.webui.guard import limits_middleware, security_headers
from limen.proxy.webui.ratelimit import RateLimiter
from limen.proxy.webui.session_api import session_routes
from limen.proxy.webui.sessions import COOKIE, Refused, WebSession, WebSessions
from limen.proxy.webui.sso_web import WebLogins, sso_web_routes
from limen.proxy.webui.static import DIST, static_routes
from limen.proxy.webui.terminal import terminal_route
from limen.proxy.webui.web_locks import WebLocks
from limen.services.locks import Locked

__all__ = ["WebUI"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SIGNUP_FINISH = "/v1/webapi/signup"
_SIGNUP_PATHS = frozenset({_SIGNUP_FINISH, "/v1/webapi/signup/begin"})
_PUBLIC_PATHS = _SIGNUP_PATHS | {"/v1/webapi/ping", "/v1/webapi/login", "/v1/webapi/join",
                                 "/v1/webapi/trustedclusters/validate"}
"""Calls that act for no web session: a cookie a browser still sends does not matter."""
_LOCK_EXEMPT = frozenset({("POST", "/v1/webapi/sessions"), ("DELETE", "/v1/webapi/sessions")})
"""A new web login (auth refuses a locked user's) and logout (always allowed)."""


def tls_client_cert(request: web.Request) -> bytes | None:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) \
        else None
    return bytes(der) if der else None


class WebUI:
    def __init__(self, auth: AuthClient, ping_info: Callable[[], dict[str, Any]],
                 emitter: Emitter | None = None, locks: WebLocks | None = None) -> None:
        """``locks``: the proxy's lock view (none: web sessions are not checked for locks)."""
        self.auth, self.ping_info, self.emitter = auth, ping_info, emitter
        self.locks = locks
        self.sessions = WebSessions()
        self.web_logins = WebLogins()
        self.login_by_address = RateLimiter(burst=20, per_minute=10)
        self.login_by_user = RateLimiter(burst=10, per_minute=5)
        # per address: the sign-ups that set a password (Argon2id) and spend a link, as many
        # as a team onboarding from one office NAT; guessing a link's code is bounded per link
        self.signup_by_address = RateLimiter(burst=60, per_minute=30)
        self.signup_by_link = RateLimiter(burst=10, per_minute=5)

    def user_cert(self, request: web.Request) -> bytes:
        """The certificate (DER) to act for the caller with; raises 401/403 without one."""
        der = tls_client_cert(request)
        if der is not None:
            return der
        changes = request.method not in ("GET", "HEAD")
        return self.sessions.current(request, changes_state=changes).tls_cert_der

    async def _logged_out(self, session: WebSession, remote_addr: str) -> None:
        if self.emitter is not None:
            await self.emitter.emit(make_event(
                "user.logout", cluster=session.cluster, user=session.user, method="web",
                remote_addr=remote_addr))

    async def _refused(self, request: web.Request, user: str, err: Refused) -> None:
        if self.emitter is not None:
            await self.emitter.emit(make_event(
                "access.denied", cluster=str(self.ping_info().get("cluster", "")),
                user=user or None, action=err.action, reason=str(err),
                remote_addr=request.remote or "", origin=request.headers.get("Origin", "")))

    @web.middleware
    async def _audit_refusals(self, request: web.Request,
                              handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refused as err:
            session = self.sessions.lookup(request.cookies.get(COOKIE, ""))
            await self._refused(request, session.user if session else "", err)
            raise

    async def _locked(self, session: WebSession, err: Locked, remote_addr: str, *,
                      action: str, **extra: Any) -> None:
        """A call refused, or a terminal ended, by a lock: ``access.denied`` naming it."""
        if self.emitter is not None:
            await self.emitter.emit(make_event(
                "access.denied", cluster=session.cluster, user=session.user, action=action,
                reason=str(err), remote_addr=remote_addr, rule="lock", **err.lock.to_fields(),
                **extra))

    @web.middleware
    async def _enforce_locks(self, request: web.Request,
                             handler: Handler) -> web.StreamResponse:
        """Every web API call made with a web session asks the lock view first (not the
        public calls, nor logging in, where auth decides, or out)."""
        if self.locks is not None and request.path.startswith("/v1/webapi/") \
                and (request.method, request.path) not in _LOCK_EXEMPT \
                and request.path not in _PUBLIC_PATHS:
            session = self.sessions.lookup(request.cookies.get(COOKIE, ""))
            if session is not None and tls_client_cert(request) is None:
                try:
                    await self.locks.check(session)
                except Locked as err:
                    await self._locked(session, err, request.remote or "",
                                       action=f"web.{request.method.lower()} {request.path}")
                    raise
        return await handler(request)

    @web.middleware
    async def _signup_limit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and request.path in _SIGNUP_PATHS:
            if request.path == _SIGNUP_FINISH:
                self.signup_by_address.take(request.remote or "", "sign-ups from this address")
            try:
                token = loads_bounded((await request.read()).decode()).get("token")
            except (LimenError, UnicodeDecodeError, AttributeError):
                token = None  # not a JSON object within bounds: the handler refuses it
            if isinstance(token, str):
                self.signup_by_link.take(token, "sign-up attempts with this link")
        return await handler(request)

    def outer_middlewares(self) -> list[Middleware]:
        """Before the error mapping: the security headers reach error answers too."""
        return [security_headers]

    def middlewares(self) -> list[Middleware]:
        return [limits_middleware, self._audit_refusals, self._enforce_locks,
                self._signup_limit]

    def mount(self, app: web.Application) -> None:
        app.add_routes(session_routes(self.auth, self.sessions, self._logged_out,
                                      by_address=self.login_by_address,
                                      by_user=self.login_by_user))
        app.add_routes(sso_web_routes(self.auth, self.sessions, self.web_logins,
                                      by_address=self.login_by_address))
        app.add_routes([terminal_route(self.sessions, lambda: self.ping_info()["ssh_proxy"],
                                       self._refused, self.locks, self._locked),
                        cast_route(self.auth, self.user_cert)])
        app.add_routes(static_routes(DIST))
