"""Web sessions, kept in the proxy's memory (Teleport's model): the certificates a browser
login got from auth and the private key the proxy generated for them, keyed by a random
256-bit id the browser holds in the ``__Host-limen_session`` cookie, with a CSRF token bound to
the session. Nothing of it is written to disk; a proxy restart logs browsers out.

Called by ``limen.proxy.webui.session_api`` (create, renew, delete) and by every web call made
for a browser (``current``: the session of the request's cookie, CSRF checked for calls that
change state).
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from limen.errors import AccessDenied, LimitExceeded

__all__ = ["COOKIE", "CSRF_HEADER", "NotLoggedIn", "Refused", "WebSession", "WebSessions"]

COOKIE = "__Host-limen_session"
CSRF_HEADER = "X-CSRF-Token"
IDLE_TTL = timedelta(minutes=15)
"""A session not renewed for this long ends (the page renews it while it is open)."""
MAX_SESSIONS = 10_000


class Refused(AccessDenied):
    """A web call refused for a reason worth auditing (CSRF token, Origin): ``action`` names
    what was refused; ``limen.proxy.webui.mount`` audits it as ``access.denied``."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(message)
        self.action = action


class NotLoggedIn(AccessDenied):
    """No valid web session (HTTP 401): log in again."""

    http_status = 401


@dataclass
class WebSession:
    id: str
    csrf: str
    user: str
    cluster: str
    roles: list[str]
    logins: list[str]
    private_key_pem: bytes
    ssh_cert: str
    tls_cert_der: bytes
    known_hosts: list[str]
    cert_expires: datetime
    expires: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at logout: the session's open terminals close."""

    def summary(self) -> dict[str, Any]:
        return {"user": self.user, "cluster": self.cluster, "roles": self.roles,
                "logins": self.logins, "expires": self.expires.isoformat(),
                "cert_expires": self.cert_expires.isoformat(), "csrf_token": self.csrf}


class WebSessions:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._sessions: dict[str, WebSession] = {}

    def create(self, user: str, login: dict[str, Any], private_key_pem: bytes) -> WebSession:
        """A session from auth's login answer (``limen.auth.http.requests.login_answer``)."""
        self._expire()
        if len(self._sessions) >= MAX_SESSIONS:
            raise LimitExceeded("too many web sessions on this proxy: try again later")
        cert = x509.load_pem_x509_certificate(login["tls_cert"].encode())
        session = WebSession(
            id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), user=user,
            cluster=str(login["cluster"]), roles=list(login["roles"]),
            logins=list(login["logins"]), private_key_pem=private_key_pem,
            ssh_cert=str(login["ssh_cert"]),
            tls_cert_der=cert.public_bytes(serialization.Encoding.DER),
            known_hosts=list(login["known_hosts"]), cert_expires=cert.not_valid_after_utc)
        session.expires = min(self._clock() + IDLE_TTL, session.cert_expires)
        self._sessions[session.id] = session
        return session

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            self._sessions.pop(key).ended.set()

    def lookup(self, session_id: str) -> WebSession | None:
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= self._clock():
            del self._sessions[session_id]
            session.ended.set()
            return None
        return session

    def current(self, request: web.Request, *, changes_state: bool) -> WebSession:
        """The session of the request's cookie; with ``changes_state``, the request must also
        carry its CSRF token in ``X-CSRF-Token`` (403 otherwise)."""
        session = self.lookup(request.cookies.get(COOKIE, ""))
        if session is None:
            raise NotLoggedIn("this call needs your Limen certificate (run lmsh login) or a "
                              "web session (log in again on the web page)")
        if changes_state and not self.csrf_ok(session, request.headers.get(CSRF_HEADER, "")):
            raise Refused(f"web.{request.method.lower()} {request.path}",
                          "missing or wrong CSRF token")
        return session

    @staticmethod
    def csrf_ok(session: WebSession, token: str) -> bool:
        return hmac.compare_digest(session.csrf.encode(), token.encode())

    def renew(self, session: WebSession) -> WebSession:
        session.expires = min(self._clock() + IDLE_TTL, session.cert_expires)
        return session

    def delete(self, session: WebSession) -> None:
        self._sessions.pop(session.id, None)
        session.ended.set()

    def set_cookie(self, response: web.StreamResponse, session: WebSession) -> None:
        seconds = max(0, int((session.expires - self._clock()).total_seconds()))
        response.set_cookie(COOKIE, session.id, max_age=seconds, path="/", secure=True,
                            httponly=True, samesite="Strict")

    @staticmethod
    def clear_cookie(response: web.StreamResponse) -> None:
        response.set_cookie(COOKIE, "", max_age=0, path="/", secure=True, httponly=True,
                            samesite="Strict")
