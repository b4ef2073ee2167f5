"""Apps on the proxy's web port: an aiohttp middleware that takes every request whose ``Host``
is an online app's public address (the rest goes on to the web API and UI), and
``GET /.well-known/jwks.json`` (the keys that verify the ``Limen-Jwt-Assertion`` apps get).

For an app request: the client's certificate from the TLS handshake must be the user's app
certificate for that app (``lmsh apps login NAME``); without any certificate a browser
(``Accept: text/html``) is sent to ``/web/login?redirect=<the app URL>`` on the proxy, any
other client gets 401. Then the roles decide (``app_labels``), auth signs the identity token,
an app agent admits the connection and :mod:`limen.proxy.app.http_relay` serves the request.
Refusals are answered 401/403 (503 when no agent serves the app, 502 when the app cannot be
reached) and audited as failed ``app.session.start``; a served request is audited in its
session's ``app.session.chunk`` (:mod:`limen.proxy.app.app_audit`). Installed on the web
application by :meth:`AppFront.install` (``limen.cli.proxy_component``).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from limen.ca.identity import Identity
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError
from limen.net.address import is_ip_address
from limen.net.streams import close_writer
from limen.proxy.app.app_audit import AppAudit, SessionKey
from limen.proxy.app.app_route import AppRefused, AppRouter, AppTarget
from limen.proxy.app.http_relay import Relayed, relay

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
        self._public_address = public_address

    def install(self, app: web.Application) -> None:
        """Take the app hosts' requests before anything else, and serve the JWKS."""
        app.middlewares.insert(0, self.middleware)
        app.router.add_get("/.well-known/jwks.json", self.jwks)

    async def aclose(self) -> None:
        await self.audit.aclose()

    async def jwks(self, _request: web.Request) -> web.Response:
        try:
            keys = await self.router.jwks()
        except LimenError as err:
            return web.Response(status=503, text=f"the keys are not available: {err}\n")
        return web.json_response(keys, headers={"Cache-Control": "max-age=60"})

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
        return await self.serve(request, target)

    async def serve(self, request: web.Request, target: AppTarget) -> web.StreamResponse:
        client_ip = request.remote or ""
        der = _peer_der(request)
        if der is None:
            return self._unauthenticated(request, target)
        session_id = _session_id(der, target.name)
        identity: Identity | None = None
        try:
            identity = self.router.verify(der)
            self.router.check_app_cert(identity, target)
            await self.router.admit(identity, target)
            token = await self.router.token(der, target)
        except (AccessDenied, BadParameter) as err:
            return await self._refuse(403, str(err), identity, target, session_id, client_ip)
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
                      target: AppTarget, session_id: str, client_ip: str) -> web.Response:
        await self.audit.refused(cluster=self.router.cluster,
                                 user=identity.username if identity else None, app=target.name,
                                 session_id=session_id, remote_addr=client_ip, reason=reason)
        return web.Response(status=status, text=f"Limen: {reason}\n")


def _host_of(address: str) -> str:
    if address.startswith("["):
        return address.split("]", 1)[0].lower() + "]"
    return (address.rsplit(":", 1)[0] if ":" in address else address).lower()
