"""The reverse tunnel and the proxy's SSH front, end to end on 127.0.0.1 with real parts.

One in-process cluster per test: a real AuthService (CAs, mTLS API, SQLite backend), the
ProxySSHService (SSH front + tunnel server) with the proxy's credentials from auth, and a
TunnelAgent with node credentials issued by auth's host CA. Users' certificates come from the
cluster's user CA. The client is the real OpenSSH ``ssh``; agentless nodes are the stock Debian
``sshd``. The node behind the tunnel is a stand-in asyncssh server (``StandInNode``) that
checks the user certificate against the user CA and runs ``echo``/``cat``/``true``; one test
puts the real node agent (``NodeSSHServer``) behind a second tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from limen.agents.node import NodeServerConfig, NodeSSHServer, StoreAccessPolicy
from limen.api.loader import SourceDocument
from limen.api.resources import Origin
from limen.api.validation import validate
from limen.auth.auth_service import AuthService
from limen.auth.client import AuthClient
from limen.backend.factory import open_backend
from limen.ca.authority import CertAuthority, CertAuthorityType, ssh_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import (
    generate_private_key,
    private_key_to_openssh,
    private_key_to_pem,
    public_key_to_openssh,
)
from limen.ca.ssh_certs import sign_host_cert, sign_user_cert
from limen.ca.ssh_peer import host_key
from limen.config import ClusterSettings, Listeners, Settings
from limen.events.emitter import MemoryEmitter
from limen.proxy.sshproxy import ProxySSHService
from limen.recording.sink import LocalDirectorySink, recordings_dir
from limen.tunnel import DialRequest, TunnelAgent, TunnelAgentSettings
from limen.tunnel.protocol import KIND_NODE
from ports import free_port

SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSHD = "/usr/sbin/sshd"
CLUSTER = "root"
DEADLINE = 20.0
HOUR = timedelta(hours=1)

ROLES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: dev}
spec:
  allow:
    logins: ['{{internal.logins}}']
    node_labels: {env: dev}
"""


def _resource(name: str, address: str, env: str) -> str:
    return f"""
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: {name}, labels: {{env: {env}}}}}
spec: {{kind: ssh, address: '{address}'}}
"""


def _docs(text: str) -> list[Any]:
    import yaml

    docs = [d for d in yaml.safe_load_all(text) if d]
    return validate([SourceDocument("<test>", i, 1, d) for i, d in enumerate(docs)])


# ---------------------------------------------------------------------- stand-in node


class StandInNode:
    """An asyncssh SSH server served on each tunnel data socket: user certificates from the
    cluster's user CA, commands ``echo X``, ``cat > /dev/null``, ``true``."""

    def __init__(self, creds: HostCredentials) -> None:
        self.key, self.cert = host_key(creds)
        lines = "".join(f"cert-authority {k}\n" for k in creds.user_ca_keys)
        self.authorized = asyncssh.import_authorized_keys(lines)
        self.requests: list[DialRequest] = []

    async def handle(self, sock: socket.socket, request: DialRequest) -> None:
        self.requests.append(request)
        conn = await asyncssh.run_server(
            sock, server_host_keys=[(self.key, self.cert)],
            authorized_client_keys=self.authorized, process_factory=self._process,
            encoding=None, allow_pty=False)
        await conn.wait_closed()

    @staticmethod
    async def _process(process: Any) -> None:
        command = process.command or ""
        if command.startswith("echo "):
            process.stdout.write(command[5:].encode() + b"\n")
        elif command.startswith("cat"):
            while await process.stdin.read(1 << 16):
                pass
        process.exit(0)


# ---------------------------------------------------------------------- the cluster


@dataclass
class Env:
    tmp: Path
    auth: AuthService
    emitter: MemoryEmitter
    proxy: ProxySSHService
    listeners: dict[str, str]
    node_creds: HostCredentials
    agent: TunnelAgent
    node: StandInNode
    auth_client: AuthClient
    extra: list[Any] = field(default_factory=list)

    @property
    def user_ca(self) -> CertAuthority:
        return self.auth.server.authorities.get(CertAuthorityType.USER)

    @property
    def host_ca(self) -> CertAuthority:
        return self.auth.server.authorities.get(CertAuthorityType.HOST)

    def host_creds(self, host_id: str, hostname: str, role: SystemRole) -> HostCredentials:
        key = generate_private_key()
        certs = self.auth.server.issue_host_certs(
            host_id, hostname, role, public_key_to_openssh(key.public_key()), ["127.0.0.1"])
        return HostCredentials(
            cluster=CLUSTER, host_id=host_id, role=role.value, hostname=hostname,
            private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
            tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert,
            user_ca_keys=tuple(certs.user_ca_keys), host_ca_keys=tuple(certs.host_ca_keys))

    def user(self, name: str = "alice", *, logins: tuple[str, ...] = ("root",),
             ca: CertAuthority | None = None, ttl: timedelta = HOUR,
             now: datetime | None = None, port_forwarding: bool = True) -> Path:
        """Key + certificate files and an ssh_config for OpenSSH; returns the config path."""
        directory = self.tmp / f"user-{name}-{len(self.extra)}"
        directory.mkdir()
        self.extra.append(directory)
        key = generate_private_key()
        key_path = directory / "id"
        key_path.write_text(private_key_to_openssh(key))
        key_path.chmod(0o600)
        identity = Identity(username=name, cluster=CLUSTER, roles=("dev",), logins=logins,
                            traits={"logins": logins})
        cert = sign_user_cert(ca or self.user_ca, key.public_key(), identity, ttl, now=now,
                              permit_port_forwarding=port_forwarding)
        (directory / "id-cert.pub").write_bytes(cert + b"\n")
        return self.ssh_config(directory, key_path, directory / "id-cert.pub")

    def ssh_config(self, directory: Path, key: Path, cert: Path) -> Path:
        known = directory / "known_hosts"
        known.write_text("".join(f"@cert-authority * {k}\n"
                                 for k in self.host_ca.ssh_public_keys()))
        host, port = self.listeners["ssh_proxy"].rsplit(":", 1)
        config = directory / "ssh_config"
        config.write_text(f"""
Host *
    User root
    IdentityFile {key}
    CertificateFile {cert}
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile {known}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
    LogLevel INFO
Host proxy
    HostName {host}
    Port {port}
""")
        return config


async def ssh(config: Path, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        SSH, "-F", str(config), *args, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out, err.decode(errors="replace")


def heartbeat_doc(name: str = "web1", env: str = "dev") -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": name, "labels": {"env": env}},
            "spec": {"kind": "ssh", "hostname": name}}


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    settings = Settings(data_dir=tmp_path / "data",
                        cluster=ClusterSettings(name=CLUSTER, second_factor="off"),
                        listeners=Listeners().randomized())
    settings.data_dir.mkdir(mode=0o700)
    backend = open_backend(settings.data_dir)
    emitter = MemoryEmitter()
    auth = AuthService(settings, backend, emitter)
    await auth.start()
    await auth.server.apply(_docs(ROLES), Origin.API, actor="test")
    proxy_creds = auth.issue_local_credentials(SystemRole.PROXY, ["127.0.0.1", "localhost"])
    auth_client = AuthClient(auth.address, proxy_creds)
    proxy = ProxySSHService(settings, proxy_creds, auth_client, emitter, view_ttl=0.0)
    listeners = await proxy.start()
    env = Env(tmp_path, auth, emitter, proxy, listeners, None, None, None,  # type: ignore[arg-type]
              auth_client)
    env.node_creds = env.host_creds("node-1", "web1", SystemRole.NODE)
    env.node = StandInNode(env.node_creds)
    env.agent = TunnelAgent(listeners["tunnel"], env.node_creds, env.node.handle,
                            heartbeat_doc, settings=TunnelAgentSettings(heartbeat_interval=0.5))
    await env.agent.start()
    await proxy.tunnel.registry.wait_for(lambda r: "node-1" in r, DEADLINE)
    try:
        yield env
    finally:
        await env.agent.stop()
        await proxy.stop()
        await auth_client.close()
        await auth.stop()
        await backend.close()


# ---------------------------------------------------------------------- tunnel


async def test_dial_reaches_the_handler_and_bytes_flow_both_ways(env: Env) -> None:
    received = bytearray()

    async def echo(sock: socket.socket, request: DialRequest) -> None:
        loop = asyncio.get_running_loop()
        with sock:
            while data := await loop.sock_recv(sock, 1 << 16):
                received.extend(data)
                await loop.sock_sendall(sock, data)

    env.agent.handler = echo
    payload = os.urandom(1 << 20)
    conn = await env.proxy.tunnel.dial("node-1", DialRequest(kind=KIND_NODE, target="web1"))
    back = bytearray()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class Collect(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            transport.write(payload)
            transport.write_eof()

        def data_received(self, data: bytes) -> None:
            back.extend(data)

        def eof_received(self) -> None:
            done.set_result(None)

    conn.attach(Collect())
    async with asyncio.timeout(DEADLINE):
        await done
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()


async def test_heartbeats_reach_auth_presence(env: Env) -> None:
    record = env.proxy.tunnel.registry["node-1"]
    assert (record.hostname, record.role, record.cluster) == ("web1", "node", CLUSTER)

    async def listed() -> list[dict[str, Any]]:
        return list((await env.auth_client.call("GET", "/v1/presence/nodes"))["items"])

    async with asyncio.timeout(DEADLINE):
        while not (items := await listed()):
            await env.proxy.tunnel.registry.wait_for(lambda r: True, DEADLINE)
    (item,) = items
    assert item["host_id"] == "node-1"
    assert item["tunnel"] == env.proxy.credentials.host_id
    assert item["resource"]["metadata"]["labels"] == {"env": "dev"}
    assert item["expires"] > time.time() + 20
    assert env.proxy.tunnel.registry["node-1"].labels == {"env": "dev"}


async def test_agent_reaches_auth_through_the_proxy(env: Env) -> None:
    local = await env.agent.local_auth_listener()
    async with AuthClient(local, env.node_creds) as client:
        ping = await client.ping()
    assert ping["cluster"] == CLUSTER


async def test_agent_reconnects_after_the_proxy_restarts(env: Env) -> None:
    tunnel = env.proxy.tunnel
    first = env.agent.connections
    await tunnel.stop()
    await tunnel.registry.wait_for(lambda r: "node-1" not in r, DEADLINE)
    await tunnel.start(env.listeners["tunnel"])
    started = time.monotonic()
    await tunnel.registry.wait_for(lambda r: "node-1" in r, DEADLINE)
    await env.agent.wait_for(lambda a: a.connections == first + 1, DEADLINE)
    assert time.monotonic() - started < 10
    config = env.user()
    code, out, err = await ssh(config, "-J", "proxy", "web1", "echo", "again")
    assert (code, out) == (0, b"again\n"), err


# ---------------------------------------------------------------------- OpenSSH through the front


async def test_openssh_jump_reaches_the_node_through_the_tunnel(env: Env) -> None:
    config = env.user()
    code, out, err = await ssh(config, "-J", "proxy", "web1", "echo", "ok")
    assert (code, out) == (0, b"ok\n"), err
    (request,) = env.node.requests
    assert (request.kind, request.user, request.mode) == ("node", "alice", "raw")
    code, out, err = await ssh(config, "-J", "proxy", "node-1", "echo", "by-id")
    assert (code, out) == (0, b"by-id\n"), err
    # a jump is routing, not port forwarding: certificates without permit-port-forwarding
    # (role option port_forwarding: false) still jump; the node enforces the option
    no_forwarding = env.user("bob", port_forwarding=False)
    code, out, err = await ssh(no_forwarding, "-J", "proxy", "web1", "echo", "jumped")
    assert (code, out) == (0, b"jumped\n"), err


async def test_openssh_jump_reaches_the_real_node_agent(env: Env) -> None:
    creds = env.host_creds("node-2", "web2", SystemRole.NODE)
    data_dir = env.tmp / "node2"
    node = NodeSSHServer(
        NodeServerConfig(creds, {"env": "dev"}, data_dir),
        lambda: ssh_trust_map([env.user_ca], CertAuthorityType.USER),
        StoreAccessPolicy(env.auth.server.store, {"env": "dev"}, cluster=CLUSTER),
        env.emitter, LocalDirectorySink(recordings_dir(data_dir)))

    async def handler(sock: socket.socket, request: DialRequest) -> None:
        await node.handle_socket(sock, request.client_addr)

    agent = TunnelAgent(env.listeners["tunnel"], creds, handler,
                        lambda: heartbeat_doc("web2"))
    await agent.start()
    try:
        await env.proxy.tunnel.registry.wait_for(lambda r: "node-2" in r, DEADLINE)
        code, out, err = await ssh(env.user(), "-J", "proxy", "web2", "echo", "real-node")
        assert (code, out) == (0, b"real-node\n"), err
        event = await env.emitter.wait_for(
            lambda e: e.type.value == "exec" and e.fields.get("server_id") == "node-2",
            timeout=DEADLINE)
        assert event.user == "alice"
        assert event.fields.get("login") == "root"
    finally:
        await agent.stop()
        await node.close()


async def test_openssh_through_the_proxy_subsystem(env: Env) -> None:
    config = env.user()
    command = f"{SSH} -F {config} -s proxy proxy:%h:%p@{CLUSTER}"
    code, out, err = await ssh(config, "-o", f"ProxyCommand={command}", "web1", "echo", "sub")
    assert (code, out) == (0, b"sub\n"), err


async def test_lmsh_proxy_ssh_as_proxycommand(env: Env) -> None:
    """The client side of ``lmsh proxy ssh`` (limen.client.proxyssh) against this front."""
    config = env.user()
    user_dir = config.parent
    script = user_dir / "proxycommand.py"
    script.write_text(f"""
import asyncio, sys
from pathlib import Path
from limen.client.proxyssh import run_proxy_ssh
asyncio.run(run_proxy_ssh(
    ssh_proxy={env.listeners["ssh_proxy"]!r}, login="root", target_host=sys.argv[1],
    target_port=int(sys.argv[2]), cluster={CLUSTER!r}, key_path=Path({str(user_dir / "id")!r}),
    cert_path=Path({str(user_dir / "id-cert.pub")!r}),
    known_hosts=Path({str(user_dir / "known_hosts")!r})))
""")
    command = f"{sys.executable} {script} %h %p"
    code, out, err = await ssh(config, "-o", f"ProxyCommand={command}", "web1", "echo",
                               "lmsh")
    assert (code, out) == (0, b"lmsh\n"), err


async def test_agentless_sshd_through_the_jump(env: Env, tmp_path: Path) -> None:
    async with stock_sshd(env, tmp_path) as port:
        await env.auth.server.apply(
            _docs(_resource("legacy1", f"127.0.0.1:{port}", "dev")
                  + "---\n" + _resource("prod1", f"127.0.0.1:{port}", "prod")),
            Origin.API, actor="test")
        config = env.user()
        code, out, err = await ssh(config, "-J", "proxy", "legacy1", "echo", "agentless")
        assert (code, out) == (0, b"agentless\n"), err
        end = await env.emitter.wait_for(
            lambda e: e.type.value == "session.end" and e.fields.get("server") == "legacy1",
            timeout=DEADLINE)
        start = await env.emitter.wait_for(
            lambda e: e.type.value == "session.start" and e.fields.get("server") == "legacy1")
        assert start.user == "alice"
        assert start.fields["session_id"] == end.fields["session_id"]
        assert end.fields["bytes_in"] > 0
        assert end.fields["bytes_out"] > 0
        # a node whose labels no role allows is hidden: it answers like an unknown one
        code, _out, err = await ssh(config, "-J", "proxy", "prod1", "true")
        assert code != 0
        assert "unknown node 'prod1'" in err


@contextlib.asynccontextmanager
async def stock_sshd(env: Env, tmp_path: Path) -> AsyncIterator[int]:
    directory = tmp_path / "sshd"
    directory.mkdir()
    key = generate_private_key()
    (directory / "host_key").write_text(private_key_to_openssh(key))
    (directory / "host_key").chmod(0o600)
    cert = sign_host_cert(env.host_ca, key.public_key(), "legacy-1", "legacy1",
                          ["127.0.0.1"], HOUR, SystemRole.NODE)
    (directory / "host_key-cert.pub").write_bytes(cert + b"\n")
    (directory / "user_ca.pub").write_text("\n".join(env.user_ca.ssh_public_keys()) + "\n")
    port = free_port()
    config = directory / "sshd_config"
    config.write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {directory}/host_key
HostCertificate {directory}/host_key-cert.pub
TrustedUserCAKeys {directory}/user_ca.pub
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
StrictModes no
PermitRootLogin prohibit-password
""")
    os.makedirs("/run/sshd", exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        SSHD, "-D", "-e", "-f", str(config), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                try:
                    _r, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    if proc.returncode is not None:
                        raise AssertionError("sshd exited") from None
                    await asyncio.sleep(0.05)  # polling a port that is not open yet
                    continue
                writer.close()
                break
        yield port
    finally:
        proc.terminate()
        await proc.wait()


# ---------------------------------------------------------------------- refusals


async def test_front_refuses_foreign_expired_and_host_certificates(env: Env) -> None:
    foreign = CertAuthority.generate(CLUSTER, CertAuthorityType.USER)
    past = datetime.now(UTC) - timedelta(hours=3)
    for what, config in {
        "foreign CA": env.user("mallory", ca=foreign),
        "expired": env.user("old", now=past, ttl=timedelta(minutes=5)),
    }.items():
        code, out, _err = await ssh(config, "-J", "proxy", "web1", "echo", "no")
        assert code != 0, what
        assert out == b"", what
    # OpenSSH never offers a host certificate for user auth; asyncssh sends what it is given
    host = env.host_creds("node-9", "web9", SystemRole.NODE)
    key, cert = host_key(host)
    proxy_host, port = env.listeners["ssh_proxy"].rsplit(":", 1)
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(proxy_host, int(port), username="root", known_hosts=None,
                               client_keys=[(key, cert)], agent_path=None, config=None)
    # a plain key is refused too
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(proxy_host, int(port), username="root", known_hosts=None,
                               client_keys=[key], agent_path=None, config=None)
    for reason in ("untrusted CA", "expired", "host certificate"):
        event = await env.emitter.wait_for(
            lambda e, r=reason: e.type.value == "auth"  # type: ignore[misc]
            and e.fields.get("listener") == "ssh_proxy" and r in e.fields.get("reason", ""),
            timeout=DEADLINE)
        assert event.code == "L3005W"
    # the front still serves
    code, out, err = await ssh(env.user(), "-J", "proxy", "web1", "echo", "still")
    assert (code, out) == (0, b"still\n"), err


async def test_unknown_target_fails_with_a_reason(env: Env) -> None:
    code, _out, err = await ssh(env.user(), "-J", "proxy", "nosuchnode", "true")
    assert code != 0
    assert "unknown node 'nosuchnode'" in err


def _rogue(env: Env, host_id: str, cert_for: Any) -> HostCredentials:
    """Node credentials whose SSH certificate is ``cert_for(public_key)``."""
    base = env.host_creds(host_id, "rogue", SystemRole.NODE)
    key = generate_private_key()
    return HostCredentials(
        cluster=CLUSTER, host_id=host_id, role="node", hostname="rogue",
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=base.tls_cert_pem,
        tls_ca_pem=base.tls_ca_pem, ssh_cert=cert_for(key.public_key()),
        user_ca_keys=base.user_ca_keys, host_ca_keys=base.host_ca_keys)


async def test_tunnel_refuses_user_certificates_and_foreign_or_expired_hosts(env: Env) -> None:
    foreign_ca = CertAuthority.generate(CLUSTER, CertAuthorityType.HOST)
    past = datetime.now(UTC) - timedelta(hours=3)
    alice = Identity(username="alice", cluster=CLUSTER, roles=("dev",), logins=("root",))
    cases = {
        "user certificate was presented": lambda pub: sign_user_cert(
            env.user_ca, pub, alice, HOUR),
        "untrusted CA": lambda pub: sign_host_cert(
            foreign_ca, pub, "node-x", "rogue", [], HOUR, SystemRole.NODE),
        "expired": lambda pub: sign_host_cert(
            env.host_ca, pub, "node-x", "rogue", [], timedelta(minutes=5), SystemRole.NODE,
            now=past),
        "has role proxy": lambda pub: sign_host_cert(
            env.host_ca, pub, "node-x", "rogue", [], HOUR, SystemRole.PROXY),
    }
    for reason, make_cert in cases.items():
        agent = TunnelAgent(env.listeners["tunnel"], _rogue(env, "node-x", make_cert),
                            env.node.handle, heartbeat_doc)
        await agent.start()
        try:
            event = await env.emitter.wait_for(
                lambda e, r=reason: e.type.value == "auth"  # type: ignore[misc]
                and e.fields.get("listener") == "tunnel" and r in e.fields.get("reason", ""),
                timeout=DEADLINE)
            assert event.code == "L3005W"
            assert "node-x" not in env.proxy.tunnel.registry
            assert agent.connections == 0
        finally:
            await agent.stop()
    # a certificate offered for the SSH login itself is refused at the SSH layer
    host, port = env.listeners["tunnel"].rsplit(":", 1)
    key = generate_private_key()
    cert = asyncssh.import_certificate(sign_user_cert(env.user_ca, key.public_key(), alice,
                                                      HOUR))
    client_key = asyncssh.import_private_key(private_key_to_openssh(key))
    env.proxy.tunnel.hello_timeout = 1.0
    conn = await asyncssh.connect(host, int(port), username="alice", known_hosts=None,
                                  client_keys=[(client_key, cert)], agent_path=None, config=None)
    await env.emitter.wait_for(lambda e: "a certificate was offered" in e.fields.get(
        "reason", ""), timeout=DEADLINE)
    # it fell back to its plain key, which only buys the hello deadline: no channel, no port
    # forwarding, then the connection is dropped
    with pytest.raises(asyncssh.ChannelOpenError):
        await conn.open_connection("127.0.0.1", 22)
    async with asyncio.timeout(DEADLINE):
        await conn.wait_closed()
    await env.emitter.wait_for(lambda e: "no valid hello" in e.fields.get("reason", ""),
                               timeout=DEADLINE)
    assert "node-1" in env.proxy.tunnel.registry  # the legitimate agent was never disturbed


async def test_garbage_and_unknown_nonces_on_the_tunnel_port(env: Env) -> None:
    host, port = env.listeners["tunnel"].rsplit(":", 1)
    for junk in (b"GET / HTTP/1.1\r\n\r\n", b"LIMEN-DATA " + b"0" * 32 + b"\n",
                 b"LIMEN-DATA nothex\n", b"\x00" * 100):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(junk)
        async with asyncio.timeout(DEADLINE):
            assert await reader.read() == b""
        writer.close()
    # a connection that never sends its preamble is dropped at the deadline
    env.proxy.tunnel.preamble_timeout = 0.2
    reader, writer = await asyncio.open_connection(host, int(port))
    async with asyncio.timeout(DEADLINE):
        assert await reader.read() == b""
    writer.close()
    code, out, err = await ssh(env.user(), "-J", "proxy", "web1", "echo", "alive")
    assert (code, out) == (0, b"alive\n"), err
