"""Browser sessions of apps, kept in the proxy's memory: what lets a browser (which has no app
certificate) open ``https://<app>.<proxy host>`` after logging in to the web UI.

::

    browser, logged in on the proxy ── POST /v1/webapi/apps/session {app} (web session cookie
        and CSRF token, or lmsh's client certificate) ─▶ the user's app certificate from auth
        (for the web session's key) ─▶ an app session (random 256-bit id) and a one-time
        hand-over token (60 s) ─▶ {"redirect": "https://<app host>/__limen/app-session?..."}
    browser ── GET that URL on the app's host ─▶ the token is spent (once, for that app only)
        ─▶ Set-Cookie limen_app_session=<id>; Secure; HttpOnly; SameSite=Lax; Path=/ (no
        Domain: that host only) ─▶ 302 to the path asked for (a path on that host, never
        another site)
    browser ── any request with the cookie ─▶ the session's certificate stands for the user
        (verified again like a client certificate: CA, expiry, usage app, this app)

The cookie never reaches the app (the relay removes it). A session ends with its certificate
(the web login's lifetime) or after :data:`IDLE` without use. Called by
:mod:`limen.proxy.app.app_front`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from limen.errors import AccessDenied, LimitExceeded

__all__ = ["HANDOVER_PATH", "IDLE", "AppSession", "AppSessions"]

HANDOVER_PATH = "/__limen/app-session"
IDLE = timedelta(hours=1)
_HANDOVER_TTL = timedelta(seconds=60)
_MAX = 10_000


@dataclass
class AppSession:
    id: str
    app: str
    user: str
    cert_der: bytes
    cert_expires: datetime
    expires: datetime


class AppSessions:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._sessions: dict[str, AppSession] = {}
        self._handovers: dict[str, tuple[str, datetime]] = {}

    def create(self, app: str, user: str, cert_der: bytes, cert_expires: datetime) -> str:
        """A new session and its one-time hand-over token (what the redirect carries)."""
        self._expire()
        if len(self._sessions) >= _MAX or len(self._handovers) >= _MAX:
            raise LimitExceeded("too many app sessions on this proxy: try again later")
        now = self._clock()
        session = AppSession(secrets.token_urlsafe(32), app, user, cert_der, cert_expires,
                             min(now + IDLE, cert_expires))
        self._sessions[session.id] = session
        token = secrets.token_urlsafe(32)
        self._handovers[token] = (session.id, now + _HANDOVER_TTL)
        return token

    def hand_over(self, token: str, app: str) -> AppSession:
        """The session a hand-over token names, spending the token (AccessDenied when it is
        unknown, spent, expired or for another app)."""
        entry = self._handovers.pop(token, None)
        session = self._sessions.get(entry[0]) if entry is not None else None
        if entry is None or session is None or entry[1] <= self._clock():
            raise AccessDenied("this app session link is unknown, used or expired: open the "
                               "app again")
        if session.app != app:
            raise AccessDenied(f"this app session link is not for app {app}")
        return session

    def lookup(self, session_id: str, app: str) -> AppSession | None:
        """The live session of the cookie ``session_id`` for ``app`` (its idle time renewed)."""
        session = self._sessions.get(session_id)
        now = self._clock()
        if session is None or session.app != app:
            return None
        if session.expires <= now:
            del self._sessions[session_id]
            return None
        session.expires = min(now + IDLE, session.cert_expires)
        return session

    def _expire(self) -> None:
        now = self._clock()
        for key in [k for k, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[key]
        for key in [k for k, (_, t) in self._handovers.items() if t <= now]:
            del self._handovers[key]
