"""What the operator's kube agent needs of auth to join: the static kube token
(``auth.kube_token_file``), in-process (``AuthServer`` on the memory backend). It joins kube
agents again and again, for role kube only; the db and proxy tokens do not join a kube agent,
nor the kube token anything else; ``AuthService`` reads it from its file at start."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from limen.auth.auth_service import AuthService
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.config import AuthSettings, ClusterSettings, Listeners, Settings, load_settings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter

KUBE_TOKEN = secrets.token_hex(24)
DB_TOKEN = secrets.token_hex(24)
PROXY_TOKEN = secrets.token_hex(24)
KUBE_A, KUBE_B = "8c3f5e4a-3f6d-4a0c-9e7f-4d5c6e7f8091", "9d4a6f5b-4a7e-4b1d-8f8a-5e6d7f8a9b02"


@pytest.fixture
async def auth() -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter())
    await server.start()
    server.static_kube_token = KUBE_TOKEN
    server.static_db_token = DB_TOKEN
    server.static_proxy_token = PROXY_TOKEN
    return server


def _joins(auth: AuthServer) -> list[dict[str, Any]]:
    assert isinstance(auth.emitter, MemoryEmitter)
    return [e.to_dict() for e in auth.emitter.events if e.type == "join"]


async def _join(auth: AuthServer, token: str, role: str, host_id: str = "") -> Any:
    key = public_key_to_openssh(generate_private_key().public_key())
    return await auth.join(token, role, host_id, "kube-agent", key, [])


async def test_the_static_kube_token_joins_kube_agents_again_and_again(
        auth: AuthServer) -> None:
    first = await _join(auth, KUBE_TOKEN, "kube", KUBE_A)
    second = await _join(auth, KUBE_TOKEN, "kube", KUBE_B)
    assert [c.identity.system_role for c in (first, second)] == [SystemRole.KUBE] * 2
    events = _joins(auth)
    assert [(e["success"], e["host_id"], e["role"], e["token_id"]) for e in events] == [
        (True, KUBE_A, "kube", "static-kube-token"), (True, KUBE_B, "kube", "static-kube-token")]
    assert all(KUBE_TOKEN not in json.dumps(e) for e in events)


@pytest.mark.parametrize(("token", "role"), [
    (KUBE_TOKEN, "proxy"), (KUBE_TOKEN, "db"), (KUBE_TOKEN, "node"), (DB_TOKEN, "kube"),
    (PROXY_TOKEN, "kube"), (KUBE_TOKEN[:-1] + ("0" if KUBE_TOKEN[-1] != "0" else "1"), "kube")],
    ids=["kube-token-as-proxy", "kube-token-as-db", "kube-token-as-node", "db-token-as-kube",
         "proxy-token-as-kube", "wrong-kube-token"])
async def test_the_kube_token_joins_role_kube_only(auth: AuthServer, token: str,
                                                   role: str) -> None:
    with pytest.raises(AccessDenied, match="join refused"):
        await _join(auth, token, role, "sneaky")
    [event] = _joins(auth)
    assert (event["success"], event["role"]) == (False, role)
    assert token not in json.dumps(event)


async def test_without_a_kube_token_none_is_accepted(auth: AuthServer) -> None:
    auth.static_kube_token = ""
    assert not auth.is_static_token(SystemRole.KUBE, "")
    with pytest.raises(AccessDenied, match="join refused"):
        await _join(auth, KUBE_TOKEN, "kube")


def _service(tmp_path: Path, token_file: Path) -> AuthService:
    settings = Settings(data_dir=tmp_path / "data", cluster=ClusterSettings(name="unit"),
                        listeners=Listeners(auth="127.0.0.1:0"),
                        auth=AuthSettings(kube_token_file=str(token_file)))
    settings.data_dir.mkdir(mode=0o700)
    return AuthService(settings, MemoryBackend(), MemoryEmitter())


async def test_auth_reads_the_kube_token_file_at_start(tmp_path: Path) -> None:
    token_file = tmp_path / "kube-token"
    token_file.write_text(KUBE_TOKEN + "\n")
    service = _service(tmp_path, token_file)
    await service.start()
    try:
        assert service.server.is_static_token(SystemRole.KUBE, KUBE_TOKEN)
        assert not service.server.is_static_token(SystemRole.DB, KUBE_TOKEN)
    finally:
        await service.stop()


async def test_a_short_kube_token_stops_auth_from_starting(tmp_path: Path) -> None:
    token_file = tmp_path / "kube-token"
    token_file.write_text("short\n")
    service = _service(tmp_path, token_file)
    try:
        with pytest.raises(BadParameter, match=r"the kube token in .* is too short"):
            await service.start()
    finally:
        await service.stop()


def test_the_setting_is_read_from_limen_yaml(tmp_path: Path) -> None:
    config = tmp_path / "limen.yaml"
    config.write_text("auth: {kube_token_file: /etc/limen/kube-token/token}\n")
    settings = load_settings(config)
    assert settings.auth.kube_token_file == "/etc/limen/kube-token/token"
