"""Runs the proxy in ``limen start``: the HTTPS web listener (login, sign-up, join, user calls,
by ALPN the routes of ``alpn_routes``: the SSH proxy, the database fronts, and by server name
those of ``sni_routes``: the kube front; :mod:`limen.proxy.tls_router`)
and, through ``ProxySSHService``, the SSH front and the reverse-tunnel server. Called by the
daemon (``limen.cli.compose``), which gives it its credentials and auth client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from limen.aio.backoff import keep_trying
from limen.aio.tasks import cancel_and_wait
from limen.auth.client import AuthClient
from limen.ca.host_credentials import HostCredentials
from limen.ca.keys import spki_pin
from limen.config import Settings
from limen.errors import ConnectionProblem
from limen.events.emitter import Emitter
from limen.net.address import bind_tcp, socket_address
from limen.proxy.tls_router import ProtocolFactory, SNIRoute, TLSRouter
from limen.proxy.web import LeafListing, build_web_app
from limen.proxy.webui.web_locks import WebLocks

__all__ = ["ProxyService"]

log = logging.getLogger(__name__)



def _warn_if_not_public_key_type(creds: HostCredentials) -> None:
    """Credentials saved by a proxy that joined before its key became P-256 still work for
    Limen's clients, but browsers refuse an Ed25519 certificate: say how to renew it."""
    key = x509.load_pem_x509_certificate(creds.tls_cert_pem).public_key()
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
        log.warning("the web listener's certificate has a %s key, which browsers refuse: "
                    "remove the proxy's saved credentials (DATA_DIR/host) and join again "
                    "with a new token to get an ECDSA P-256 one", type(key).__name__)


class ProxyService:
    name = "proxy"
    web_extensions: tuple[Callable[[web.Application], None], ...] = ()
    """Called with the web application before it serves (the apps' routing by Host)."""
    alpn_routes: Mapping[str, ProtocolFactory] = {}
    """Protocols served on the web port by ALPN beside HTTP (``limen-ssh-proxy``,
    ``limen-postgres``, ``limen-mysql``, ``limen-kube``, ``limen-tunnel``)."""
    sni_routes: Mapping[str, SNIRoute] = {}
    """Protocols served on the web port by TLS server name (the kube front's)."""
    web_locks: WebLocks | None = None
    """The lock view the web UI asks (the SSH front's)."""
    leaf_listing: LeafListing | None = None
    """Answers ``lmsh db|kube ls --cluster LEAF`` (the db and kube routers' leaf forwarders)."""

    def __init__(self, settings: Settings, credentials: HostCredentials, auth: AuthClient,
                 extra_ping: Callable[[], dict[str, str]] = dict,
                 emitter: Emitter | None = None) -> None:
        """``extra_ping``: more fields of ``/v1/webapi/ping`` (e.g. the SSH front's address),
        read when the web listener starts; ``emitter``: the web UI's audit (logouts)."""
        self.settings = settings
        self.credentials = credentials
        self.auth = auth
        self._extra_ping = extra_ping
        self._emitter = emitter
        self._runner: web.AppRunner | None = None
        self._router: TLSRouter | None = None
        self.web_address = ""
        self._ping: dict[str, Any] = {}
        self._learning: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, str]:
        sock = bind_tcp(self.settings.listeners.web)
        try:
            self.web_address = socket_address(sock)
            creds = self.credentials
            self._ping = {
                "cluster": creds.cluster, "tls_ca": creds.tls_ca_pem.decode(),
                "ca_pin": spki_pin(x509.load_pem_x509_certificates(creds.tls_ca_pem)[0]),
                "public_address": self.settings.cluster.public_address or self.web_address,
                **self._extra_ping(),
            }
            if not await self._learn_second_factor():
                self._learning = asyncio.create_task(self._learn_second_factor_later(),
                                                     name="proxy-second-factor")
            self._runner = web.AppRunner(build_web_app(self.auth, lambda: self._ping,
                                                       self._emitter, self.web_locks,
                                                       self.leaf_listing),
                                         access_log=None, handle_signals=False)
            for extend in self.web_extensions:
                extend(self._runner.app)
            await self._runner.setup()
            _warn_if_not_public_key_type(creds)
            context = creds.server_ssl(client_cas=creds.tls_cas(), require_client_cert=False)
            assert self._runner.server is not None
            self._router = TLSRouter(context, self._runner.server, self.alpn_routes,
                                     self.sni_routes)
            await self._router.start(sock)
        except BaseException:
            sock.close()
            await self.stop()
            raise
        return {"web": self.web_address}

    async def _learn_second_factor(self) -> bool:
        """Ask auth whether logins need a TOTP code (the ping tells ``lmsh``); False when auth
        cannot answer now (down, or its backend unreachable)."""
        try:
            status = await self.auth.call("GET", "/v1/status")
        except ConnectionProblem as err:
            log.warning("proxy: auth cannot answer yet (%s); serving meanwhile, the ping "
                        "names no second factor until it does", err)
            return False
        self._ping["second_factor"] = status["second_factor"]
        return True

    async def _learn_second_factor_later(self) -> None:
        status = await keep_trying(partial(self.auth.call, "GET", "/v1/status"),
                                   (ConnectionProblem,))
        self._ping["second_factor"] = status["second_factor"]
        log.info("proxy: auth answers again")

    async def stop(self) -> None:
        task, self._learning = self._learning, None
        await cancel_and_wait(task)
        if self._router is not None:
            self._router.stop()
            self._router = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
