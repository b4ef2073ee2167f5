"""Runs the proxy in ``limen start``: the HTTPS web listener and (later) the SSH, tunnel and
protocol listeners. Called by the daemon (``limen.cli.process``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from cryptography import x509

from limen.auth.client import AuthClient
from limen.ca.host_credentials import HostCredentials
from limen.ca.keys import spki_pin
from limen.config import Settings
from limen.net.address import bind_tcp, socket_address
from limen.proxy.web import build_web_app

__all__ = ["ProxyService"]


class ProxyService:
    name = "proxy"

    def __init__(self, settings: Settings,
                 credentials: Callable[[list[str]], Awaitable[HostCredentials]],
                 auth_address: Callable[[], str]) -> None:
        self.settings = settings
        self._credentials = credentials
        self._auth_address = auth_address
        self._runner: web.AppRunner | None = None
        self._auth: AuthClient | None = None
        self.web_address = ""
        self._ping: dict[str, Any] = {}

    async def start(self) -> dict[str, str]:
        sock = bind_tcp(self.settings.listeners.web)
        self.web_address = socket_address(sock)
        public = self.settings.cluster.public_address or self.web_address
        names = sorted({public.rpartition(":")[0].strip("[]"), "localhost",
                        sock.getsockname()[0]})
        creds = await self._credentials(names)
        self._auth = AuthClient(self._auth_address(), creds)
        status = await self._auth.call("GET", "/v1/status")
        ca_pem = creds.tls_ca_pem.decode()
        self._ping = {
            "cluster": creds.cluster, "tls_ca": ca_pem,
            "ca_pin": spki_pin(x509.load_pem_x509_certificates(creds.tls_ca_pem)[0]),
            "second_factor": status["second_factor"], "public_address": public,
        }
        self._runner = web.AppRunner(build_web_app(self._auth, lambda: self._ping),
                                     access_log=None, handle_signals=False)
        await self._runner.setup()
        context = creds.server_ssl(client_cas=creds.tls_cas(), require_client_cert=False)
        await web.SockSite(self._runner, sock, ssl_context=context).start()
        return {"web": self.web_address}

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._auth is not None:
            await self._auth.close()
