"""Apps on the proxy's web port: an aiohttp middleware that takes every request whose ``Host``
is an online app's public address (the rest goes on to the web API and UI), and
``GET /.well-known/jwks.json`` (the keys that verify the ``Limen-Jwt-Assertion`` apps get).

For an app request: the client's certificate from the TLS handshake must be the user's app
certificate for that app (``lmsh apps login NAME``); without any certificate a browser
(``Accept: text/html``) is sent to ``/web/login?redirect=<the app URL>`` on the proxy, any
other client gets 401. A browser has no app certificate: after logging in to the web UI it
asks for an app session (``POST /v1/webapi/apps/session {app, path}``,
:mod:`limen.proxy.app.app_sessions`) and presents its cookie instead. Then the roles decide
(``app_labels``), auth signs the identity token, an app agent admits the connection and
:mod:`limen.proxy.app.http_relay` serves the request. Refusals are answered 401/403 (503 when
no agent serves the app, 502 when the app cannot be reached) and audited as failed
``app.session.start``; a served request is audited in its session's ``app.session.chunk``
(:mod:`limen.proxy.app.app_audit`). Installed on the web application by
:meth:`AppFront.install` (``limen.cli.proxy_component``).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.ca.identity import Identity
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError, NotFound
from limen.net.address import is_ip_address
from limen.net.http import json_body
from limen.net.streams import close_writer
from limen.proxy.app.app_audit import AppAudit, SessionKey
from limen.proxy.app.app_route import AppRefused, AppRouter, AppTarget
from limen.proxy.app.app_sessions import HANDOVER_PATH, AppSessions
from limen.proxy.app.http_relay import APP_COOKIE, Relayed, relay
from limen.proxy.web import USER_CERT
from limen.services.locks import lock_fields

__all__ = ["AppFront"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _host(request: web.Request) -> str:
    host = (request.host or "").lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


def _peer_der(request: web.Request) -> bytes | None:
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    der = ssl_object.getpeercert(binary_form=True) if isinstance(ssl_object, ssl.SSLObject) \
        else None
    return bytes(der) if der else None


def _session_id(der: bytes, app: str) -> str:
    """One app session per certificate and app (stable across requests and proxies)."""
    digest = hashlib.sha256(der + b"\0" + app.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


class AppFront:
    def __init__(self, router: AppRouter, audit: AppAudit,
                 public_address: Callable[[], str]) -> None:
        self.router = router
        self.audit = audit
        self.sessions = AppSessions()
        self._public_address = public_address

    def install(self, app: web.Application) -> None:
        """Take the app hosts' requests before anything else, and serve the JWKS."""
        app.middlewares.insert(0, self.middleware)
        app.router.add_get("/.well-known/jwks.json", self.jwks)
        app.router.add_post("/v1/webapi/apps/session", self.create_session)

    async def aclose(self) -> None:
        await self.audit.aclose()

    async def jwks(self, _request: web.Request) -> web.Response:
        try:
            keys = await self.router.jwks()
        except LimenError as err:
            return web.Response(status=503, text=f"the keys are not available: {err}\n")
        return web.json_response(keys, headers={"Cache-Control": "max-age=60"})

    async def create_session(self, request: web.Request) -> web.Response:
        """An app session for the caller (web session or client certificate) and the URL on
        the app's host that hands its cookie over."""
        body = await json_body(request, 4096)
        name, path = body.get("app"), body.get("path", "/")
        if not isinstance(name, str) or not name or not isinstance(path, str):
            raise BadParameter("app (a name) and path (a string) are expected")
        if not path.startswith("/") or path.startswith("//") or "\\" in path or any(
                ord(c) < 0x21 for c in path):
            raise BadParameter("path must be a path on the app's host (/...)")
        user_cert = request.app[USER_CERT](request)
        target = await self.router.find_name(name)
        if target is None:
            raise NotFound(f"app {name!r} is not online")
        answer = await self.router.view.auth.call("POST", "/v1/apps/certs", {"app": name},
                                                  as_user_cert=user_cert)
        cert = x509.load_pem_x509_certificate(str(answer["cert"]).encode())
        der = cert.public_bytes(Encoding.DER)
        identity = self.router.verify(der)
        self.router.check_app_cert(identity, target)
        token = self.sessions.create(name, identity.username, der, cert.not_valid_after_utc)
        port = request.url.port
        host = target.spec.public_addr + (f":{port}" if port not in (None, 443) else "")
        return web.json_response({"redirect": f"https://{host}{HANDOVER_PATH}?token={token}"
                                              f"&next={quote(path, safe='')}"})

    def _hand_over(self, request: web.Request, target: AppTarget) -> web.StreamResponse:
        """Spend the hand-over token: the session's cookie for this host only, then the page."""
        session = self.sessions.hand_over(request.query.get("token", ""), target.name)
        path = request.query.get("next", "/")
        if not path.startswith("/") or path.startswith("//") or "\\" in path:
            path = "/"
        response = web.Response(status=302, headers={"Location": path})
        seconds = int((session.expires - datetime.now(UTC)).total_seconds())
        response.set_cookie(APP_COOKIE, session.id, max_age=max(0, seconds), path="/",
                            secure=True, httponly=True, samesite="Lax")
        return response

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = _host(request)
        proxy_host = _host_of(self._public_address())
        if not host or host == proxy_host or host == "localhost" or is_ip_address(
                host.strip("[]")):
            return await handler(request)
        try:
            target = await self.router.find(host)
        except LimenError as err:
            log.warning("apps: cannot tell whether %s is an app: %s", host, err)
            target = None
        if target is None:
            return await handler(request)
        if request.path == HANDOVER_PATH:
            try:
                return self._hand_over(request, target)
            except AccessDenied as err:
                return await self._refuse(403, str(err), None, target, "",
                                          request.remote or "")
        return await self.serve(request, target)

    async def serve(self, request: web.Request, target: AppTarget) -> web.StreamResponse:
        client_ip = request.remote or ""
        der = _peer_der(request)
        if der is None:
            session = self.sessions.lookup(request.cookies.get(APP_COOKIE, ""), target.name)
            if session is None:
                return self._unauthenticated(request, target)
            der = session.cert_der
        session_id = _session_id(der, target.name)
        identity: Identity | None = None
        try:
            identity = self.router.verify(der)
            self.router.check_app_cert(identity, target)
            await self.router.admit(identity, target)
            token = await self.router.token(der, target)
        except (AccessDenied, BadParameter) as err:
            return await self._refuse(403, str(err), identity, target, session_id, client_ip,
                                      **lock_fields(err))
        except LimenError as err:
            return await self._refuse(503, str(err), identity, target, session_id, client_ip)
        key = SessionKey(self.router.cluster, identity.username, target.name, session_id)
        await self.audit.session(key, client_ip, public_addr=target.spec.public_addr,
                                 uri=target.spec.uri)
        try:
            reader, writer = await self.router.open(target, der, identity,
                                                    client_addr=client_ip,
                                                    session_id=session_id)
        except AppRefused as err:
            return await self._refuse(err.status, str(err), identity, target, session_id,
                                      client_ip)
        except LimenError as err:
            return await self._refuse(503, str(err), identity, target, session_id, client_ip)
        result = Relayed()
        try:
            return await relay(request, reader, writer, target.spec, token, client_ip, result)
        except BadParameter as err:
            result.status = 400
            return web.Response(status=400, text=f"Limen: {err}\n")
        except ConnectionProblem as err:
            result.status = 502
            return web.Response(status=502, text=f"Limen: app {target.name}: {err}\n")
        except (OSError, ssl.SSLError) as err:
            result.status = result.status or 499
            log.info("apps: %s %s for %s ended: %s", request.method, request.path,
                     identity.username, err)
            raise
        finally:
            await close_writer(writer)
            self.audit.request(key, method=request.method, path=request.path,
                               status=result.status, bytes_in=result.bytes_in,
                               bytes_out=result.bytes_out, upgraded=result.upgraded)

    def _unauthenticated(self, request: web.Request, target: AppTarget) -> web.StreamResponse:
        if "text/html" in request.headers.get("Accept", ""):
            url = f"https://{request.host}{request.raw_path}"
            raise web.HTTPFound(f"https://{self._public_address()}/web/login?redirect="
                                f"{quote(url, safe='')}")
        return web.Response(status=401, text=f"Limen: app {target.name} needs your app "
                                             f"certificate: lmsh apps login {target.name}\n")

    async def _refuse(self, status: int, reason: str, identity: Identity | None,
                      target: AppTarget, session_id: str, client_ip: str,
                      **extra: Any) -> web.Response:
        """``extra``: more audit fields (the lock behind a refusal)."""
        await self.audit.refused(cluster=self.router.cluster,
                                 user=identity.username if identity else None, app=target.name,
                                 session_id=session_id, remote_addr=client_ip, reason=reason,
                                 **extra)
        return web.Response(status=status, text=f"Limen: {reason}\n")


def _host_of(address: str) -> str:
    if address.startswith("["):
        return address.split("]", 1)[0].lower() + "]"
    return (address.rsplit(":", 1)[0] if ":" in address else address).lower()
