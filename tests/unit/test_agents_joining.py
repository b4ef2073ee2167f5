"""``limen.agents.joining``: reusing saved host credentials, the errors of ``load_or_join``
before any network call, and ``tunnel_address`` against a tiny HTTPS ping server that presents
a certificate of the cluster's TLS CA (the joins themselves run against a real auth server in
``test_auth_api_agents``)."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from limen.agents.joining import RENEW_BEFORE, _load_valid, credentials_dir, load_or_join
from limen.agents.joining import tunnel_address as find_tunnel
from limen.auth.core import HOST_CERT_TTL, AuthServer
from limen.backend.memory import MemoryBackend
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.config import ClusterSettings, JoinSettings, Settings
from limen.errors import BadParameter, ConnectionProblem
from limen.events.emitter import MemoryEmitter

CLUSTER = "unit"


async def _auth(name: str = CLUSTER, clock: Callable[[], float] = time.time) -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name=name), MemoryEmitter(),
                        clock=clock)
    await server.start()
    return server


def _creds(auth: AuthServer, role: SystemRole, host_id: str = "host-1") -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(host_id, "box", role, public_key_to_openssh(key.public_key()),
                                  ["127.0.0.1"])
    return HostCredentials(
        cluster=auth.cluster_name, host_id=host_id, role=role.value, hostname="box",
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
        tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert,
        user_ca_keys=tuple(certs.user_ca_keys), host_ca_keys=tuple(certs.host_ca_keys))


def _ago(seconds: float) -> Callable[[], float]:
    return lambda: time.time() - seconds


@pytest.fixture
async def auth() -> AuthServer:
    return await _auth()


# ---------------------------------------------------------------------- saved credentials


def test_no_directory_or_no_meta_means_no_credentials(tmp_path: Path) -> None:
    assert _load_valid(tmp_path / "missing", SystemRole.NODE) is None
    (tmp_path / "empty").mkdir()
    assert _load_valid(tmp_path / "empty", SystemRole.NODE) is None


async def test_valid_credentials_of_the_role_are_reused(auth: AuthServer, tmp_path: Path) -> None:
    saved = _creds(auth, SystemRole.NODE)
    saved.save(tmp_path / "host")
    loaded = _load_valid(tmp_path / "host", SystemRole.NODE)
    assert loaded == saved


async def test_credentials_of_another_role_are_refused(auth: AuthServer, tmp_path: Path) -> None:
    _creds(auth, SystemRole.PROXY).save(tmp_path / "host")
    with pytest.raises(BadParameter, match="credentials of a proxy, not of a node"):
        _load_valid(tmp_path / "host", SystemRole.NODE)


async def test_damaged_credentials_are_not_used(auth: AuthServer, tmp_path: Path) -> None:
    _creds(auth, SystemRole.NODE).save(tmp_path / "host")
    (tmp_path / "host" / "tls.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\ngarbage\n")
    assert _load_valid(tmp_path / "host", SystemRole.NODE) is None
    (tmp_path / "host" / "meta.json").write_text("{not json")
    assert _load_valid(tmp_path / "host", SystemRole.NODE) is None


async def test_credentials_near_expiry_are_replaced(tmp_path: Path) -> None:
    left = timedelta(minutes=30)
    assert left < RENEW_BEFORE
    old = await _auth(clock=_ago((HOST_CERT_TTL - left).total_seconds()))
    _creds(old, SystemRole.NODE).save(tmp_path / "soon")
    assert _load_valid(tmp_path / "soon", SystemRole.NODE) is None

    fine = await _auth(clock=_ago((HOST_CERT_TTL - timedelta(hours=2)).total_seconds()))
    _creds(fine, SystemRole.NODE).save(tmp_path / "later")
    assert _load_valid(tmp_path / "later", SystemRole.NODE) is not None


# ---------------------------------------------------------------------- load_or_join


def _settings(tmp_path: Path, **join: str) -> Settings:
    return Settings(data_dir=tmp_path / "data", join=JoinSettings(**join))


async def test_saved_credentials_need_no_token(auth: AuthServer, tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    saved = _creds(auth, SystemRole.NODE)
    saved.save(credentials_dir(settings.data_dir))
    assert credentials_dir(settings.data_dir) == settings.data_dir / "host"
    assert await load_or_join(settings, SystemRole.NODE, "host-1") == saved


@pytest.mark.parametrize(("role", "join", "message"), [
    (SystemRole.NODE, {}, r"credentials in .* are missing: give --token"),
    (SystemRole.NODE, {"token": "t", "proxy": "127.0.0.1:1"}, r"--ca-pin \(join.ca_pin\)"),
    (SystemRole.PROXY, {"token": "t", "ca_pin": "sha256:00", "proxy": "127.0.0.1:1"},
     r"proxy started apart from auth needs --auth-server"),
    (SystemRole.NODE, {"token": "t", "ca_pin": "sha256:00", "auth_server": "127.0.0.1:1"},
     r"node agent started apart from auth needs --proxy"),
    (SystemRole.DB, {"token": "t", "ca_pin": "sha256:00"}, r"db agent .* needs --proxy"),
])
async def test_missing_join_settings_are_named(tmp_path: Path, role: SystemRole,
                                               join: dict[str, str], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        await load_or_join(_settings(tmp_path, **join), role, "host-1")
    assert not credentials_dir(tmp_path / "data").exists()


async def test_expired_saved_credentials_need_a_token_again(tmp_path: Path) -> None:
    old = await _auth(clock=_ago((HOST_CERT_TTL - timedelta(minutes=5)).total_seconds()))
    settings = _settings(tmp_path)
    _creds(old, SystemRole.NODE).save(credentials_dir(settings.data_dir))
    with pytest.raises(BadParameter, match="give --token"):
        await load_or_join(settings, SystemRole.NODE, "host-1")


async def test_saved_credentials_of_another_role_stop_the_join(auth: AuthServer,
                                                               tmp_path: Path) -> None:
    settings = _settings(tmp_path, token="t", ca_pin="sha256:00", proxy="127.0.0.1:1")
    _creds(auth, SystemRole.PROXY).save(credentials_dir(settings.data_dir))
    with pytest.raises(BadParameter, match="use another --data-dir"):
        await load_or_join(settings, SystemRole.NODE, "host-1")


# ---------------------------------------------------------------------- tunnel_address


class PingServer:
    """``GET /v1/webapi/ping`` over HTTPS, answering whatever ``self.ping`` holds."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.ping: dict[str, Any] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        return web.json_response(self.ping)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/webapi/ping", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def ping_server(auth: AuthServer) -> AsyncIterator[PingServer]:
    server = PingServer(_creds(auth, SystemRole.PROXY, "proxy-1").server_ssl())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.parametrize(("proxy_host", "listed", "expected"), [
    ("127.0.0.1", "0.0.0.0:4024", "127.0.0.1:4024"),
    ("localhost", "0.0.0.0:4024", "localhost:4024"),
    ("localhost", "[::]:4025", "localhost:4025"),
    ("127.0.0.1", "tunnel.example.com:3024", "tunnel.example.com:3024"),
    ("127.0.0.1", "[2001:db8::1]:3024", "[2001:db8::1]:3024"),
])
async def test_a_wildcard_tunnel_host_becomes_the_proxy_host(
        auth: AuthServer, ping_server: PingServer, proxy_host: str, listed: str,
        expected: str) -> None:
    ping_server.ping = {"cluster": CLUSTER, "tunnel": listed}
    creds = _creds(auth, SystemRole.NODE)
    assert await find_tunnel(f"{proxy_host}:{ping_server.port}", creds) == expected


async def test_a_ping_without_a_cluster_name_is_accepted(auth: AuthServer,
                                                         ping_server: PingServer) -> None:
    ping_server.ping = {"tunnel": "0.0.0.0:4024"}
    assert await find_tunnel(f"127.0.0.1:{ping_server.port}",
                             _creds(auth, SystemRole.NODE)) == "127.0.0.1:4024"


@pytest.mark.parametrize(("ping", "message"), [
    ({"cluster": "elsewhere", "tunnel": "0.0.0.0:4024"}, "serves cluster 'elsewhere'"),
    ({"cluster": CLUSTER}, "does not announce a tunnel listener"),
    ({"cluster": CLUSTER, "tunnel": ""}, "does not announce a tunnel listener"),
    ({"cluster": CLUSTER, "tunnel": "no-port"}, "invalid address"),
])
async def test_a_wrong_ping_is_refused(auth: AuthServer, ping_server: PingServer,
                                       ping: dict[str, Any], message: str) -> None:
    ping_server.ping = ping
    with pytest.raises(BadParameter, match=message):
        await find_tunnel(f"127.0.0.1:{ping_server.port}", _creds(auth, SystemRole.NODE))


async def test_a_proxy_of_another_ca_is_not_trusted(auth: AuthServer) -> None:
    other = await _auth("impostor")
    server = PingServer(_creds(other, SystemRole.PROXY, "proxy-x").server_ssl())
    server.ping = {"cluster": CLUSTER, "tunnel": "0.0.0.0:4024"}
    await server.start()
    try:
        with pytest.raises(ConnectionProblem, match="cannot verify the TLS certificate"):
            await find_tunnel(f"127.0.0.1:{server.port}", _creds(auth, SystemRole.NODE))
    finally:
        await server.stop()
