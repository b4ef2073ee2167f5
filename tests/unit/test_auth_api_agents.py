"""The auth API routes of agents and proxies run apart from auth (``limen.auth.http.agents``:
``POST /v1/events``, ``/v1/recordings/{id}``, ``/v1/proxy/address``) and the direct
``/v1/join`` with the static proxy token (``auth.proxy_token_file``).

A real ``AuthService`` on 127.0.0.1 (CAs, mutual-TLS API, memory backend, in-memory audit
log); callers are ``AuthClient``s holding certificates that auth's CAs issued: nodes and a
proxy (host certificates), the admin identity auth writes at start, and a user."""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import stat
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from limen.agents.joining import credentials_dir, load_or_join
from limen.auth.auth_service import AuthService
from limen.auth.client import AuthClient
from limen.auth.http.agents import RECORDING_META_HEADER
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.x509_certs import sign_client_cert
from limen.config import AuthSettings, ClusterSettings, JoinSettings, Listeners, Settings
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.events.emitter import MemoryEmitter
from limen.events.event import AuditEvent, make_event
from limen.net.http import ApiClient
from limen.recording.sink import recordings_dir

CLUSTER = "unit"
PROXY_TOKEN = secrets.token_hex(24)


class BatchingEmitter(MemoryEmitter):
    """A memory emitter that writes batches as FileLog and PostgresLog do, in one
    ``emit_many`` call each: records each call's size."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        self.batches.append(len(events))
        for event in events:
            await self.emit(event)


@dataclass
class Env:
    tmp: Path
    auth: AuthService
    emitter: BatchingEmitter
    clients: list[AuthClient]

    @property
    def recordings(self) -> Path:
        return recordings_dir(self.auth.settings.data_dir)

    def host(self, host_id: str, role: SystemRole = SystemRole.NODE) -> AuthClient:
        key = generate_private_key()
        certs = self.auth.server.issue_host_certs(
            host_id, host_id, role, public_key_to_openssh(key.public_key()), ["127.0.0.1"])
        creds = HostCredentials(
            cluster=CLUSTER, host_id=host_id, role=role.value, hostname=host_id,
            private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
            tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert)
        return self._client(creds)

    def admin(self) -> AuthClient:
        return self._client(HostCredentials.load(self.auth.settings.data_dir / "admin"))

    def user(self, name: str = "alice") -> AuthClient:
        key = generate_private_key()
        tls_ca = self.auth.server.authorities.get(CertAuthorityType.TLS)
        cert = sign_client_cert(tls_ca, key.public_key(),
                                Identity(username=name, cluster=CLUSTER, roles=("dev",)),
                                timedelta(hours=1))
        return self._client(HostCredentials(
            cluster=CLUSTER, host_id=name, role="user",
            private_key_pem=private_key_to_pem(key).encode(),
            tls_cert_pem=cert.public_bytes(Encoding.PEM),
            tls_ca_pem=tls_ca.pem_bundle().encode()))

    def _client(self, creds: HostCredentials) -> AuthClient:
        client = AuthClient(self.auth.address, creds, timeout=10.0)
        self.clients.append(client)
        return client

    def ca_pem(self) -> str:
        return self.auth.server.authorities.get(CertAuthorityType.TLS).pem_bundle()

    def logged(self, event_type: str) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.emitter.events if e.type == event_type]


def _settings(tmp_path: Path, token_file: Path | None) -> Settings:
    return Settings(data_dir=tmp_path / "data", cluster=ClusterSettings(name=CLUSTER),
                    listeners=Listeners(auth="127.0.0.1:0"),
                    auth=AuthSettings(proxy_token_file=str(token_file) if token_file else ""))


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    token_file = tmp_path / "proxy-token"
    token_file.write_text(PROXY_TOKEN + "\n")
    settings = _settings(tmp_path, token_file)
    settings.data_dir.mkdir(mode=0o700)
    emitter = BatchingEmitter()
    auth = AuthService(settings, MemoryBackend(), emitter)
    await auth.start()
    env = Env(tmp_path, auth, emitter, [])
    try:
        yield env
    finally:
        for client in env.clients:
            await client.close()
        await auth.stop()


def _event(uid: str, cluster: str = CLUSTER, **fields: Any) -> dict[str, Any]:
    return make_event("exec", cluster=cluster, user="alice", uid=uid, login="root",
                      command="uptime", **fields).to_dict()


def _stored(env: Env, uid: str) -> list[AuditEvent]:
    return [e for e in env.emitter.events if e.uid == uid]


# ---------------------------------------------------------------------- POST /v1/events


async def test_a_nodes_events_land_with_its_host_id(env: Env) -> None:
    node = env.host("node-a")
    sent = [_event("e-1"), _event("e-2", server_id="forged-by-the-node")]
    assert await node.call("POST", "/v1/events", {"events": sent}) == {"accepted": 2}
    for original in sent:
        [stored] = _stored(env, original["uid"])
        row = stored.to_dict()
        assert row["server_id"] == "node-a"
        assert {k: v for k, v in row.items() if k != "server_id"} == \
            {k: v for k, v in original.items() if k != "server_id"}


async def test_a_calls_events_are_written_in_one_batch_in_order(env: Env) -> None:
    sent = [_event(f"batch-{n}") for n in range(300)]
    assert await env.host("node-a").call("POST", "/v1/events", {"events": sent}) == \
        {"accepted": 300}
    assert env.emitter.batches == [300]  # one write (and one fsync) for the call
    assert [e.uid for e in env.emitter.events if e.uid.startswith("batch-")] == \
        [e["uid"] for e in sent]


async def test_a_proxy_may_hand_over_events_too(env: Env) -> None:
    proxy = env.host("proxy-1", SystemRole.PROXY)
    assert await proxy.call("POST", "/v1/events", {"events": [_event("p-1")]}) == \
        {"accepted": 1}
    assert _stored(env, "p-1")[0].to_dict()["server_id"] == "proxy-1"


async def test_a_peers_secrets_are_scrubbed_again(env: Env) -> None:
    node = env.host("node-a")
    raw = _event("s-1")
    raw["password"] = "hunter2"  # what a careless agent might send
    await node.call("POST", "/v1/events", {"events": [raw]})
    [stored] = _stored(env, "s-1")
    assert "hunter2" not in stored.to_json()
    assert "password" in stored.to_dict()["scrubbed"]


async def test_an_event_of_another_cluster_refuses_the_whole_batch(env: Env) -> None:
    node = env.host("node-a")
    batch = [_event("ok-1"), _event("foreign-1", cluster="elsewhere"), _event("ok-2")]
    with pytest.raises(BadParameter, match=r"events\[1\] names cluster 'elsewhere'"):
        await node.call("POST", "/v1/events", {"events": batch})
    assert not [e for e in env.emitter.events if e.uid in ("ok-1", "foreign-1", "ok-2")]
    # nothing was marked as seen: the good events are accepted when sent again alone
    assert await node.call("POST", "/v1/events", {"events": [batch[0], batch[2]]}) == \
        {"accepted": 2}


@pytest.mark.parametrize(("body", "message"), [
    ({"events": "not a list"}, "events must be a list"),
    ({}, "events must be a list"),
    ({"events": [1]}, r"events\[0\] must be an object"),
    ({"events": [{**_event("bad-code"), "code": "nope"}]}, "unknown audit event code 'nope'"),
    ({"events": [{"event": "exec"}]}, "lacks the 'code' field"),
])
async def test_malformed_batches_are_refused(env: Env, body: dict[str, Any],
                                             message: str) -> None:
    before = len(env.emitter.events)
    with pytest.raises(BadParameter, match=message):
        await env.host("node-a").call("POST", "/v1/events", body)
    assert len(env.emitter.events) == before


async def test_more_than_1000_events_in_one_call_are_refused(env: Env) -> None:
    batch = [_event(f"many-{n}") for n in range(1001)]
    with pytest.raises(BadParameter, match="at most 1000"):
        await env.host("node-a").call("POST", "/v1/events", {"events": batch})
    assert not _stored(env, "many-0")


async def test_a_duplicate_uid_is_skipped(env: Env) -> None:
    node = env.host("node-a")
    event = _event("dup-1")
    assert await node.call("POST", "/v1/events", {"events": [event]}) == {"accepted": 1}
    # a resent batch (the agent never heard the answer): only the new event is stored
    assert await node.call("POST", "/v1/events", {"events": [event, _event("dup-2")]}) == \
        {"accepted": 1}
    # the same uid twice in one batch is stored once
    assert await node.call("POST", "/v1/events", {"events": [_event("dup-3")] * 2}) == \
        {"accepted": 1}
    assert [len(_stored(env, uid)) for uid in ("dup-1", "dup-2", "dup-3")] == [1, 1, 1]


@pytest.mark.parametrize("who", ["admin", "user"])
async def test_admins_and_users_may_not_hand_over_events(env: Env, who: str) -> None:
    client = env.admin() if who == "admin" else env.user()
    with pytest.raises(AccessDenied):
        await client.call("POST", "/v1/events", {"events": [_event("x-1")]})
    assert not _stored(env, "x-1")


# ---------------------------------------------------------------------- recordings


def _cast(session_id: str) -> bytes:
    header = {"version": 2, "width": 80, "height": 24, "timestamp": int(time.time()),
              "limen": {"session_id": session_id}}
    return (json.dumps(header) + "\n" + '[0.1, "o", "hello\\r\\n"]\n'
            '[0.2, "o", "bye\\r\\n"]\n').encode()


async def _upload(client: AuthClient, session_id: str, body: bytes,
                  meta: Mapping[str, Any] | None = None, *, header: str | None = None) -> Any:
    value = header if header is not None else \
        base64.b64encode(json.dumps(dict(meta or {})).encode()).decode()
    return await client.http.call("POST", f"/v1/recordings/{session_id}", data=body,
                                  headers={RECORDING_META_HEADER: value,
                                           "Content-Type": "application/octet-stream"})


def _leftovers(env: Env) -> list[str]:
    if not env.recordings.exists():
        return []
    return sorted(p.name for p in env.recordings.iterdir())


async def test_a_recording_is_stored_with_its_sidecar(env: Env) -> None:
    node = env.host("node-a")
    body = _cast("sess-1")
    meta = {"user": "alice", "login": "root", "server_id": "forged", "incomplete": False}
    assert await _upload(node, "sess-1", body, meta) == {"stored": "sess-1"}
    cast_file, meta_file = env.recordings / "sess-1.cast", env.recordings / "sess-1.json"
    assert cast_file.read_bytes() == body
    stored = json.loads(meta_file.read_text())
    assert stored["server_id"] == "node-a"
    assert (stored["user"], stored["login"]) == ("alice", "root")
    for path in (cast_file, meta_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(env.recordings.stat().st_mode) == 0o700
    assert _leftovers(env) == ["sess-1.cast", "sess-1.json"]  # no temporary file left
    [event] = env.logged("session.upload")
    assert (event["session_id"], event["server_id"], event["incomplete"]) == \
        ("sess-1", "node-a", False)


async def test_the_same_id_from_another_host_is_refused(env: Env) -> None:
    first, second = env.host("node-a"), env.host("node-b")
    body = _cast("sess-2")
    await _upload(first, "sess-2", body, {"user": "alice"})
    with pytest.raises(AccessDenied, match="belongs to another host"):
        await _upload(second, "sess-2", _cast("sess-2") + b'[0.3, "o", "evil"]\n')
    assert (env.recordings / "sess-2.cast").read_bytes() == body
    assert json.loads((env.recordings / "sess-2.json").read_text())["server_id"] == "node-a"
    # the owner may upload again (a retry after a lost answer)
    assert await _upload(first, "sess-2", body, {"user": "alice"}) == {"stored": "sess-2"}
    assert _leftovers(env) == ["sess-2.cast", "sess-2.json"]


@pytest.mark.parametrize("body", [
    b"this is not a recording\n",
    b'{"version": 1, "width": 80, "height": 24}\n[0.1, "o", "x"]\n',
    b"",
], ids=["text", "version-1", "empty"])
async def test_a_body_that_is_not_asciicast_is_refused_and_leaves_no_file(
        env: Env, body: bytes) -> None:
    with pytest.raises(BadParameter):
        await _upload(env.host("node-a"), "sess-3", body, {"user": "alice"})
    assert _leftovers(env) == []
    assert not env.logged("session.upload")


@pytest.mark.parametrize(("session_id", "header", "message"), [
    ("sess-4", "not base64!", "must be base64 JSON"),
    ("sess-4", base64.b64encode(b"[1, 2]").decode(), "must hold a JSON object"),
    ("-starts-with-a-dash", "", "invalid session id"),
])
async def test_a_bad_id_or_metadata_header_is_refused(env: Env, session_id: str, header: str,
                                                      message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        await _upload(env.host("node-a"), session_id, _cast(session_id), header=header)
    assert _leftovers(env) == []


@pytest.mark.parametrize("who", ["admin", "user"])
async def test_admins_and_users_may_not_upload_recordings(env: Env, who: str) -> None:
    client = env.admin() if who == "admin" else env.user()
    with pytest.raises(AccessDenied):
        await _upload(client, "sess-5", _cast("sess-5"))
    assert _leftovers(env) == []


# ---------------------------------------------------------------------- proxy address


async def test_only_a_proxy_registers_its_address(env: Env) -> None:
    for client in (env.host("node-a"), env.admin(), env.user()):
        with pytest.raises(AccessDenied):
            await client.call("POST", "/v1/proxy/address", {"address": "evil.example:443"})
    with pytest.raises(NotFound):
        await env.auth.server.proxy_address()
    proxy = env.host("proxy-1", SystemRole.PROXY)
    for address in ("proxy.example.com:3080", "[::1]:3080", "10.0.0.7:443"):
        assert await proxy.call("POST", "/v1/proxy/address", {"address": address}) == \
            {"address": address}
        assert await env.auth.server.proxy_address() == address


@pytest.mark.parametrize("address", [
    "no-port", "host:port", "a b:80", "", "proxy.example.com:3080/path", "x" * 300 + ":1",
    "evil.example:443\nX-Injected: 1", 3080, None,
])
async def test_a_malformed_proxy_address_is_refused(env: Env, address: Any) -> None:
    proxy = env.host("proxy-1", SystemRole.PROXY)
    with pytest.raises(BadParameter, match="address must be host:port"):
        await proxy.call("POST", "/v1/proxy/address", {"address": address})
    with pytest.raises(NotFound):
        await env.auth.server.proxy_address()


# --------------------------------------------- direct /v1/join (auth's join listener)


def _join_settings(env: Env, name: str, token: str) -> Settings:
    return Settings(data_dir=env.tmp / name, roles=("proxy",), join=JoinSettings(
        token=token, auth_server=env.auth.address, ca_pin=env.auth.server.tls_ca_pin()))


PROXY_A, PROXY_B = "5d0e4a7e-3c1b-4b9a-9f0e-7a1c2b3d4e5f", "0f9e8d7c-6b5a-4c3d-8e2f-1a0b9c8d7e6f"


async def test_the_static_proxy_token_joins_proxies_again_and_again(env: Env) -> None:
    joined = []
    for name, host_id in (("proxy-a", PROXY_A), ("proxy-b", PROXY_B)):
        settings = _join_settings(env, name, PROXY_TOKEN)
        creds = await load_or_join(settings, SystemRole.PROXY, host_id, ["127.0.0.1"])
        assert (creds.role, creds.host_id, creds.cluster) == ("proxy", host_id, CLUSTER)
        assert (credentials_dir(settings.data_dir) / "meta.json").is_file()
        joined.append(creds)
    events = env.logged("join")
    assert [(e["success"], e["host_id"], e["token_id"]) for e in events] == \
        [(True, PROXY_A, "static-proxy-token"), (True, PROXY_B, "static-proxy-token")]
    assert all(PROXY_TOKEN not in json.dumps(e) for e in events)
    # the credentials are a proxy's: auth accepts them where only a proxy may call
    client = env._client(joined[0])
    assert await client.call("POST", "/v1/proxy/address", {"address": "p.example:3080"}) == \
        {"address": "p.example:3080"}
    # and a restart reuses them without the token
    again = _join_settings(env, "proxy-a", "")
    assert await load_or_join(again, SystemRole.PROXY, PROXY_A) == joined[0]
    assert len(env.logged("join")) == 2


async def _direct_join(env: Env, token: str, role: str, host_id: str) -> Any:
    context = ssl.create_default_context(cadata=env.ca_pem())  # no client certificate
    body = {"token": token, "role": role, "host_id": host_id, "hostname": host_id,
            "public_key": public_key_to_openssh(generate_private_key().public_key()),
            "addresses": ["127.0.0.1"]}
    async with ApiClient(f"https://{env.auth.join_address}", context, timeout=10.0) as api:
        return await api.call("POST", "/v1/join", body)  # the join listener


async def test_the_static_proxy_token_does_not_join_a_node(env: Env) -> None:
    with pytest.raises(AccessDenied, match="join refused"):
        await _direct_join(env, PROXY_TOKEN, "node", "sneaky-node")
    [event] = env.logged("join")
    assert (event["success"], event["host_id"], event["role"]) == (False, "sneaky-node", "node")
    assert PROXY_TOKEN not in json.dumps(event)


async def test_a_wrong_token_is_refused_and_audited(env: Env) -> None:
    wrong = secrets.token_hex(24)
    with pytest.raises(AccessDenied, match="join refused"):
        await _direct_join(env, wrong, "proxy", "rogue-proxy")
    with pytest.raises(AccessDenied, match="join refused"):
        await load_or_join(_join_settings(env, "rogue", PROXY_TOKEN[:-1] + "x"),
                           SystemRole.PROXY, "rogue-2")
    events = env.logged("join")
    assert [(e["success"], e["host_id"], e["role"]) for e in events] == \
        [(False, "rogue-proxy", "proxy"), (False, "rogue-2", "proxy")]
    assert events[0]["remote_addr"] == "127.0.0.1"
    assert all(e["reason"] for e in events)
    assert wrong not in json.dumps(events)
    assert not credentials_dir(env.tmp / "rogue").exists()


async def test_a_direct_join_with_a_client_certificate_must_be_a_proxys(env: Env) -> None:
    body = {"token": PROXY_TOKEN, "role": "proxy", "host_id": "via-node", "hostname": "h",
            "public_key": public_key_to_openssh(generate_private_key().public_key())}
    with pytest.raises(AccessDenied):
        await env.host("node-a").call("POST", "/v1/join", body)
    assert not env.logged("join")


# ---------------------------------------------------------------------- the token file


@pytest.mark.parametrize(("content", "message"), [
    ("short-token\n", "too short"),
    ("  " + "x" * 31 + "  \n", "too short"),
    (None, "cannot read auth.proxy_token_file"),
])
async def test_a_bad_proxy_token_file_stops_auth_from_starting(
        tmp_path: Path, content: str | None, message: str) -> None:
    token_file = tmp_path / "proxy-token"
    if content is not None:
        token_file.write_text(content)
    settings = _settings(tmp_path, token_file)
    settings.data_dir.mkdir(mode=0o700)
    auth = AuthService(settings, MemoryBackend(), MemoryEmitter())
    try:
        with pytest.raises(BadParameter, match=message):
            await auth.start()
        assert auth.address == ""  # no listener was opened
    finally:
        await auth.stop()


async def test_without_a_token_file_no_static_token_is_accepted(tmp_path: Path) -> None:
    settings = _settings(tmp_path, None)
    settings.data_dir.mkdir(mode=0o700)
    emitter = BatchingEmitter()
    auth = AuthService(settings, MemoryBackend(), emitter)
    await auth.start()
    try:
        assert auth.server.static_proxy_token == ""
        env = Env(tmp_path, auth, emitter, [])
        with pytest.raises(AccessDenied, match="join refused"):
            await _direct_join(env, PROXY_TOKEN, "proxy", "no-static-token")
        with pytest.raises(BadParameter, match="token is required"):
            await _direct_join(env, "", "proxy", "empty-token")
        assert [(e.success, e.to_dict()["host_id"]) for e in emitter.events
                if e.type == "join"] == [(False, "no-static-token")]
    finally:
        await auth.stop()
