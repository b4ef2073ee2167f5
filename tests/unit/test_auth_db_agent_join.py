"""What the operator's db agents need of auth to join through the proxy's Service.

The static db token (``auth.db_token_file``), in-process (``AuthServer`` on the memory
backend): it joins db agents again and again, for role db only, and the proxy token does not
join a db agent; ``AuthService`` reads it from its file at start (a bad file stops auth from
starting). ``auth.proxy_server_names``: the proxies' certificates name their Service (an
agent's join checks the proxy's host name), and no other host may take those names."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from limen.auth.auth_service import AuthService
from limen.auth.core import AuthServer
from limen.auth.host_names import configured_proxy_names
from limen.backend.memory import MemoryBackend
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.config import AuthSettings, ClusterSettings, Listeners, Settings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter

DB_TOKEN = secrets.token_hex(24)
PROXY_TOKEN = secrets.token_hex(24)
DB_A, DB_B = "6a1f3c2e-1d4b-4e8a-9c7f-2b3a4c5d6e7f", "7b2e4d3f-2e5c-4f9b-8d6e-3c4b5d6e7f80"


@pytest.fixture
async def auth() -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter())
    await server.start()
    server.static_db_token = DB_TOKEN
    server.static_proxy_token = PROXY_TOKEN
    return server


def _joins(auth: AuthServer) -> list[dict[str, Any]]:
    assert isinstance(auth.emitter, MemoryEmitter)
    return [e.to_dict() for e in auth.emitter.events if e.type == "join"]


async def _join(auth: AuthServer, token: str, role: str, host_id: str = "") -> Any:
    key = public_key_to_openssh(generate_private_key().public_key())
    return await auth.join(token, role, host_id, "db-agent", key, [])


async def test_the_static_db_token_joins_db_agents_again_and_again(auth: AuthServer) -> None:
    first = await _join(auth, DB_TOKEN, "db", DB_A)
    second = await _join(auth, DB_TOKEN, "db", DB_B)
    assert [c.identity.system_role for c in (first, second)] == [SystemRole.DB, SystemRole.DB]
    assert [c.identity.host_id for c in (first, second)] == [DB_A, DB_B]
    events = _joins(auth)
    assert [(e["success"], e["host_id"], e["role"], e["token_id"]) for e in events] == [
        (True, DB_A, "db", "static-db-token"), (True, DB_B, "db", "static-db-token")]
    assert all(DB_TOKEN not in json.dumps(e) for e in events)


@pytest.mark.parametrize(("token", "role"), [
    (DB_TOKEN, "proxy"), (DB_TOKEN, "node"), (PROXY_TOKEN, "db"),
    (DB_TOKEN[:-1] + ("0" if DB_TOKEN[-1] != "0" else "1"), "db")],
    ids=["db-token-as-proxy", "db-token-as-node", "proxy-token-as-db", "wrong-db-token"])
async def test_a_static_token_joins_its_own_role_only(auth: AuthServer, token: str,
                                                      role: str) -> None:
    with pytest.raises(AccessDenied, match="join refused"):
        await _join(auth, token, role, "sneaky")
    [event] = _joins(auth)
    assert (event["success"], event["role"]) == (False, role)
    assert "token_id" not in event
    assert token not in json.dumps(event)


async def test_without_a_db_token_none_is_accepted(auth: AuthServer) -> None:
    auth.static_db_token = ""
    assert not auth.is_static_token(SystemRole.DB, "")
    with pytest.raises(AccessDenied, match="join refused"):
        await _join(auth, DB_TOKEN, "db")


# ---------------------------------------------------------------------- the token file


def _service(tmp_path: Path, token_file: Path | None) -> AuthService:
    settings = Settings(data_dir=tmp_path / "data", cluster=ClusterSettings(name="unit"),
                        listeners=Listeners(auth="127.0.0.1:0"),
                        auth=AuthSettings(db_token_file=str(token_file) if token_file else ""))
    settings.data_dir.mkdir(mode=0o700)
    return AuthService(settings, MemoryBackend(), MemoryEmitter())


async def test_auth_reads_the_db_token_file_at_start(tmp_path: Path) -> None:
    token_file = tmp_path / "db-token"
    token_file.write_text(DB_TOKEN + "\n")
    service = _service(tmp_path, token_file)
    await service.start()
    try:
        assert service.server.static_db_token == DB_TOKEN
        assert service.server.static_proxy_token == ""
        assert service.server.is_static_token(SystemRole.DB, DB_TOKEN)
        assert not service.server.is_static_token(SystemRole.PROXY, DB_TOKEN)
    finally:
        await service.stop()


@pytest.mark.parametrize(("content", "message"), [
    ("short-token\n", "the db token in .* is too short"),
    (None, "cannot read auth.db_token_file"),
])
async def test_a_bad_db_token_file_stops_auth_from_starting(
        tmp_path: Path, content: str | None, message: str) -> None:
    token_file = tmp_path / "db-token"
    if content is not None:
        token_file.write_text(content)
    service = _service(tmp_path, token_file)
    try:
        with pytest.raises(BadParameter, match=message):
            await service.start()
        assert service.address == ""  # no listener was opened
    finally:
        await service.stop()


# ---------------------------------------------------------------------- the proxies' names

SERVICE = ("main-proxy", "main-proxy.limen.svc")


def test_proxy_server_names_are_among_the_proxies_names() -> None:
    settings = Settings(cluster=ClusterSettings(name="unit", public_address="x.example:443"),
                        listeners=Listeners(web="0.0.0.0:3080"),
                        auth=AuthSettings(proxy_server_names=SERVICE))
    assert configured_proxy_names(settings) == (
        "*.kube-limen-proxy.limen.local", "127.0.0.1", "kube-limen-proxy.limen.local",
        "localhost", "main-proxy", "main-proxy.limen.svc", "x.example")
    assert "main-proxy" not in configured_proxy_names(Settings(
        cluster=ClusterSettings(name="unit"), listeners=Listeners(web="0.0.0.0:3080")))


async def test_a_proxy_certificate_names_the_service_and_no_agent_takes_it(
        auth: AuthServer) -> None:
    auth.proxy_names = configured_proxy_names(Settings(
        cluster=ClusterSettings(name="unit"), auth=AuthSettings(proxy_server_names=SERVICE)))
    certs = await _join(auth, PROXY_TOKEN, "proxy")
    cert = x509.load_pem_x509_certificate(certs.tls_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(SERVICE) <= set(sans.get_values_for_type(x509.DNSName))
    key = public_key_to_openssh(generate_private_key().public_key())
    with pytest.raises(AccessDenied, match="would name the proxy"):
        await auth.join(DB_TOKEN, "db", "", "main-proxy", key, [])
