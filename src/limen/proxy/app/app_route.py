"""From a request on the proxy's web port to an app agent's data connection.

:meth:`AppRouter.find` tells whether a ``Host`` names an online app (its ``public_addr``, or
``<name>.<proxy host>``; the app presence records from auth, cached for a moment).
:meth:`AppRouter.verify` and :meth:`AppRouter.check_app_cert` turn the client certificate of
the TLS handshake into an identity (this cluster's TLS CA, expiry, a user's, ``usage: app``
scoped to this very app) and :meth:`AppRouter.admit` decides with the roles as they are now
(``app_labels``, deny first) after the locks; :meth:`AppRouter.token` gets the
app session's identity JWT from auth (which checks the certificate and roles again and signs
it), kept until shortly before it expires or until the JWT CA signs with another key (a
rotation of the jwt CA: its JWKS, asked of auth at most every 2 s, lists the signing key
first; a token of a key about to leave the JWKS is not handed out again);
:meth:`AppRouter.open` dials a serving app agent
through its reverse tunnel (``MODE_TLS``: the agent must show its app host certificate with
the host id dialled), sends the :class:`~limen.tunnel.app_wire.AppConnect` and reads the
agent's answer. Called by :mod:`limen.proxy.app.app_front`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.api.app_spec import AppSpec, app_spec
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.x509_certs import verify_client_cert
from limen.errors import AccessDenied, BadParameter, ConnectionProblem, LimenError
from limen.net.streams import close_writer
from limen.proxy.agent_dial import AgentDialer
from limen.proxy.routing import ClusterView
from limen.tunnel.app_wire import AppConnect, decode_answer, encode, frame_length
from limen.tunnel.protocol import KIND_APP
from limen.tunnel.server import TunnelServer

__all__ = ["AppRefused", "AppRouter", "AppTarget"]

_CACHE_SECONDS = 2.0
_TOKEN_MARGIN = timedelta(seconds=15)
_MAX_TOKENS = 10_000

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class AppRefused(LimenError):
    """The app agent refused the connection (``status``: 403, 404 or 502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AppTarget:
    """An online app as the proxy sees it."""

    spec: AppSpec
    labels: dict[str, str]
    host_ids: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.spec.name


class AppRouter:
    def __init__(self, credentials: HostCredentials, tunnel: TunnelServer, view: ClusterView,
                 public_address: Callable[[], str], *,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.credentials = credentials
        self.view = view
        self.cluster = credentials.cluster
        self._public_address = public_address
        self._now, self._clock = now, clock
        self._trust = {credentials.cluster: credentials.tls_cas()}
        self._agents = AgentDialer(credentials, tunnel, SystemRole.APP, KIND_APP, "app agent",
                                   now)
        self._cached: tuple[float, dict[str, AppTarget]] | None = None
        self._lock = asyncio.Lock()
        self._tokens: dict[tuple[str, str], tuple[str, datetime, str]] = {}
        """(certificate, app) -> (token, expiry, the kid that signed it)."""
        self._signing: tuple[float, str] | None = None
        """When the JWKS was last read (clock) and the kid of its signing key."""

    async def _by_host(self) -> dict[str, AppTarget]:
        """Online apps by public address; a failed read keeps the previous answer."""
        async with self._lock:
            if self._cached is not None and self._clock() - self._cached[0] < _CACHE_SECONDS:
                return self._cached[1]
            try:
                items = list((await self.view.auth.call("GET", "/v1/presence/apps"))["items"])
            except (LimenError, OSError) as err:
                if self._cached is None:
                    raise ConnectionProblem(f"cannot read the online apps from auth: {err}") \
                        from None
                return self._cached[1]
            hosts: dict[str, list[dict[str, Any]]] = {}
            for record in items:
                hosts.setdefault(self._host_of(record), []).append(record)
            by_host: dict[str, AppTarget] = {}
            for host, records in hosts.items():
                if not host:
                    continue
                records.sort(key=lambda r: str(r.get("updated", "")), reverse=True)
                resource = records[0]["resource"]
                meta = resource.get("metadata") or {}
                by_host[host] = AppTarget(
                    app_spec(str(meta.get("name")), resource.get("spec") or {},
                             self._public_address()),
                    {str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
                    tuple(str(r.get("host_id", "")) for r in records))
            self._cached = (self._clock(), by_host)
            return by_host

    def _host_of(self, record: dict[str, Any]) -> str:
        resource = record.get("resource") or {}
        name = str((resource.get("metadata") or {}).get("name") or "")
        try:
            return app_spec(name, resource.get("spec") or {}, self._public_address()).public_addr
        except BadParameter:
            return ""

    async def find(self, host: str) -> AppTarget | None:
        """The app whose public address is ``host`` (no port), if one is online."""
        return (await self._by_host()).get(host.lower())

    async def find_name(self, name: str) -> AppTarget | None:
        """The online app named ``name``."""
        return next((t for t in (await self._by_host()).values() if t.name == name), None)

    def verify(self, der: bytes) -> Identity:
        """Who a valid certificate of this cluster names, whatever it is for."""
        return verify_client_cert(der, self._trust, self._now())

    @staticmethod
    def check_app_cert(identity: Identity, target: AppTarget) -> None:
        """AccessDenied unless ``identity`` is a user's app certificate for ``target``."""
        if identity.is_system:
            raise AccessDenied("a Limen process certificate cannot open an app")
        if "app" not in identity.usage or identity.route_to_app != target.name:
            raise AccessDenied(f"this certificate is not for app {target.name}: run lmsh apps "
                               f"login {target.name}")

    async def admit(self, identity: Identity, target: AppTarget) -> None:
        """AccessDenied unless the roles (as they are now) admit the app;
        :class:`~limen.services.locks.Locked` when a lock targets the user or a role (the
        proxy's lock view, the SSH front's, read again every half second)."""
        try:
            (await self.view.locks()).check(identity)
            role_set = await self.view.role_set(identity)
        except OSError as err:
            raise ConnectionProblem(f"cannot read the roles from auth: {err}") from None
        decision = role_set.check_app(target.labels)
        if not decision.allowed:
            raise AccessDenied(f"access to app {target.name} denied: {decision.reason}")

    async def token(self, der: bytes, target: AppTarget) -> str:
        """The app session's identity JWT (auth's, reused until shortly before it ends)."""
        key = (hashlib.sha256(der).hexdigest(), target.name)
        cached = self._tokens.get(key)
        now = self._now()
        if cached is not None and cached[1] - _TOKEN_MARGIN > now and \
                cached[2] == await self._signing_kid():
            return cached[0]
        pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
        answer = await self.view.auth.call("POST", "/v1/apps/jwt",
                                           {"app": target.name, "user_cert": pem})
        token, expires = str(answer["token"]), datetime.fromisoformat(answer["expires"])
        if len(self._tokens) >= _MAX_TOKENS:
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        self._tokens[key] = (token, expires, _kid_of(token))
        return token

    async def _signing_kid(self) -> str:
        """The kid the JWT CA signs with now (the first key of auth's JWKS), read at most
        every :data:`_CACHE_SECONDS`; a failed read keeps the previous answer."""
        if self._signing is not None and self._clock() - self._signing[0] < _CACHE_SECONDS:
            return self._signing[1]
        try:
            keys = (await self.jwks()).get("keys") or [{}]
        except (LimenError, OSError):
            return self._signing[1] if self._signing is not None else ""
        self._signing = (self._clock(), str(keys[0].get("kid", "")))
        return self._signing[1]

    async def jwks(self) -> dict[str, Any]:
        """The JWT CA's public keys (auth's answer; the signing key first)."""
        answer: dict[str, Any] = await self.view.auth.call("GET", "/v1/apps/jwks")
        return answer

    async def open(self, target: AppTarget, der: bytes, identity: Identity, *,
                   client_addr: str, session_id: str) -> Streams:
        """A data connection to an app agent serving ``target``, admitted by the agent
        (:class:`AppRefused` when it says no)."""
        pem = x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM).decode()
        reader, writer = await self._agents.open(
            target.host_ids, target.name,
            encode(AppConnect(target.name, pem, client_addr, session_id)),
            client_addr=client_addr, user=identity.username, session_id=session_id)
        try:
            async with asyncio.timeout(15):
                size = frame_length(await reader.readexactly(4))
                answer = decode_answer(await reader.readexactly(size))
        except (LimenError, OSError, TimeoutError, asyncio.IncompleteReadError) as err:
            await close_writer(writer)
            raise ConnectionProblem(f"the app agent did not answer: {err}") from None
        if not answer.ok:
            await close_writer(writer)
            raise AppRefused(answer.status, answer.error)
        return reader, writer


def _kid_of(token: str) -> str:
    """The ``kid`` of a JWT's header ("" when it has none)."""
    head = token.partition(".")[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        return ""
    return str(header.get("kid", "")) if isinstance(header, dict) else ""
