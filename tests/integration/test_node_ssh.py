"""The node agent's SSH server against the real OpenSSH client (``ssh``, ``scp``, ``sftp``).

::

    test thread ──ssh/scp/sftp (subprocess)──▶ NodeSSHServer.listen("127.0.0.1:0")
                                               │ runs in a background thread's event loop
                                               ├─ StoreAccessPolicy ─▶ MemoryBackend roles
                                               ├─ events ─▶ EventLog (thread-safe, waitable)
                                               └─ recordings ─▶ DATA/log/recordings

Keys and certificates come from real ``CertAuthority`` objects; the client trusts the node's
host certificate through an ``@cert-authority`` known_hosts line. Sessions run as a Unix user
created for the module (``useradd``, removed afterwards) when the tests run as root, which
they do in CI; as an ordinary user only the agent's own account can be used.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import pwd
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
import pytest

from limen.agents.node import NodeServerConfig, NodeSSHServer, StoreAccessPolicy
from limen.api.resources import Kind, Resource
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType, ssh_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity
from limen.ca.keys import generate_private_key, private_key_to_openssh, private_key_to_pem
from limen.ca.ssh_certs import sign_host_cert, sign_user_cert
from limen.events import AuditEvent
from limen.recording import LocalDirectorySink, read_cast, recordings_dir, sessions_dir
from limen.services.resource_store import ResourceStore
from ports import free_port

from .cluster import SshAgent, clean_env, wait_for

T = TypeVar("T")
CLUSTER = "main"
NODE_LABELS = {"env": "dev", "team": "web"}
IS_ROOT = os.geteuid() == 0


# ------------------------------------------------------------------------ the harness


class EventLog:
    """A thread-safe Emitter the tests can wait on."""

    def __init__(self) -> None:
        self._events: list[AuditEvent] = []
        self._cond = threading.Condition()

    async def emit(self, event: AuditEvent) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def find(self, predicate: Callable[[AuditEvent], bool]) -> list[AuditEvent]:
        with self._cond:
            return [e for e in self._events if predicate(e)]

    def wait(self, predicate: Callable[[AuditEvent], bool], timeout: float = 10.0,
             what: str = "an audit event") -> AuditEvent:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self._events:
                    if predicate(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e.type.value, dict(e.fields).get("reason")) for e in self._events]
                    raise AssertionError(f"no {what} within {timeout}s; events: {seen[-15:]}")
                self._cond.wait(left)


@dataclass
class UserKey:
    """A user's key and certificate files for ``ssh -i``."""

    directory: Path

    @property
    def key(self) -> Path:
        return self.directory / "id"

    @property
    def cert(self) -> Path:
        return self.directory / "id-cert.pub"


@dataclass
class Node:
    """The running node server and everything a test needs to reach it."""

    base: Path
    data_dir: Path
    loop: asyncio.AbstractEventLoop
    server: NodeSSHServer
    store: ResourceStore
    events: EventLog
    user_ca: CertAuthority
    host_ca: CertAuthority
    address: str
    login: str
    known_hosts: Path
    counter: list[int] = field(default_factory=lambda: [0])

    @property
    def port(self) -> str:
        return self.address.rsplit(":", 1)[1]

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def user(self, roles: tuple[str, ...] = ("dev",), *, logins: tuple[str, ...] | None = None,
             ttl: timedelta = timedelta(hours=1), now: datetime | None = None,
             ca: CertAuthority | None = None, username: str = "alice",
             agent_forwarding: bool = False, host_cert: bool = False) -> UserKey:
        """A fresh key with a certificate (``host_cert``: a host certificate instead)."""
        self.counter[0] += 1
        directory = self.base / f"user{self.counter[0]}"
        directory.mkdir()
        key = generate_private_key()
        keyfile = UserKey(directory)
        keyfile.key.write_text(private_key_to_openssh(key))
        keyfile.key.chmod(0o600)
        if host_cert:
            cert = sign_host_cert(self.host_ca, key.public_key(), "evil-host", "evil", [],
                                  ttl, now=now)
        else:
            identity = Identity(username, (ca or self.user_ca).cluster, roles=roles,
                                logins=logins if logins is not None else (self.login,))
            cert = sign_user_cert(ca or self.user_ca, key.public_key(), identity, ttl,
                                  now=now, permit_agent_forwarding=agent_forwarding)
        keyfile.cert.write_bytes(cert + b"\n")
        return keyfile

    def ssh_args(self, key: UserKey, *extra: str, login: str | None = None) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-p", self.port,
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", f"CertificateFile={key.cert}", "-o", "ConnectTimeout=10",
                "-i", str(key.key), *extra, f"{login or self.login}@127.0.0.1"]

    def ssh(self, key: UserKey, command: str, *extra: str, login: str | None = None,
            timeout: float = 20.0, env: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.ssh_args(key, *extra, login=login), command],
                              capture_output=True, text=True, timeout=timeout,
                              env=env or clean_env(), stdin=subprocess.DEVNULL, check=False)

    def file_options(self, key: UserKey) -> list[str]:
        """Options for scp and sftp (same trust and identity, -P for the port)."""
        return ["-F", "/dev/null", "-P", self.port,
                "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", f"CertificateFile={key.cert}", "-i", str(key.key)]

    def put_role(self, name: str, spec: dict[str, Any]) -> None:
        self.call(self.store.put(Resource(Kind.ROLE, name, spec=spec)))


def _role(login: str, **options: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"allow": {"logins": [login, "nobody"], "node_labels": {"env": "dev"}}}
    if options:
        spec["options"] = options
    return spec


@contextlib.contextmanager
def _test_account() -> Iterator[str]:
    """A fresh Unix account in the ``users`` group when root; else the current account."""
    if not IS_ROOT:
        yield pwd.getpwuid(os.getuid()).pw_name
        return
    name = f"limen-test-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", "/bin/bash", "-G", "users", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)


def _host_credentials(host_ca: CertAuthority) -> HostCredentials:
    host_key = generate_private_key()
    cert = sign_host_cert(host_ca, host_key.public_key(), "node-1", "web1",
                          ["127.0.0.1", "localhost"], timedelta(hours=2))
    return HostCredentials(CLUSTER, "node-1", "node",
                           private_key_pem=private_key_to_pem(host_key).encode(),
                           tls_cert_pem=b"", tls_ca_pem=b"", ssh_cert=cert, hostname="web1")


def _start_loop() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="node-ssh-loop", daemon=True)
    thread.start()
    return loop, thread


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("node")
    user_ca = CertAuthority.generate(CLUSTER, CertAuthorityType.USER)
    host_ca = CertAuthority.generate(CLUSTER, CertAuthorityType.HOST)
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"@cert-authority * {host_ca.ssh_public_keys()[0]}\n")
    loop, thread = _start_loop()
    with _test_account() as login:
        store = ResourceStore(MemoryBackend())
        events = EventLog()
        data_dir = base / "data"
        config = NodeServerConfig(_host_credentials(host_ca), NODE_LABELS, data_dir,
                                  recording_flush_interval=0.1)

        async def build() -> tuple[NodeSSHServer, str]:
            server = NodeSSHServer(
                config, lambda: ssh_trust_map([user_ca], CertAuthorityType.USER),
                StoreAccessPolicy(store, NODE_LABELS, cluster=CLUSTER), events,
                LocalDirectorySink(recordings_dir(data_dir)))
            return server, await server.listen("127.0.0.1:0")

        server, address = asyncio.run_coroutine_threadsafe(build(), loop).result(20)
        harness = Node(base, data_dir, loop, server, store, events, user_ca, host_ca,
                       address, login, known_hosts)
        harness.put_role("dev", _role(login, port_forwarding=True, forward_agent=True))
        harness.put_role("prod-only", {"allow": {"logins": [login],
                                                 "node_labels": {"env": "prod"}}})
        harness.put_role("denied", {"allow": {"logins": [login], "node_labels": {"*": "*"}},
                                    "deny": {"node_labels": {"team": "web"}}})
        harness.put_role("noforward", _role(login, port_forwarding=False))
        harness.put_role("idle", _role(login, client_idle_timeout="1s"))
        harness.put_role("nocopy", _role(login, ssh_file_copy=False))
        harness.put_role("expiring", _role(login, disconnect_expired_cert=True))
        harness.put_role("single", _role(login, max_connections=1))
        harness.put_role("strict", _role(login, record_session={"default": "strict"}))
        try:
            yield harness
        finally:
            harness.call(server.close(), timeout=30)
            harness.call(store.backend.close())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def _session_of(event: AuditEvent) -> str:
    return str(event.fields.get("session_id", ""))


# ------------------------------------------------------------------------ exec and users


def test_exec_returns_exit_codes_and_runs_as_the_login(node: Node) -> None:
    key = node.user()
    result = node.ssh(key, "id -un; pwd; id -Gn; exit 7")
    assert result.returncode == 7, result.stderr
    name, cwd, groups = result.stdout.splitlines()
    entry = pwd.getpwnam(node.login)
    assert name == node.login
    assert cwd == entry.pw_dir
    if IS_ROOT:
        assert "users" in groups.split()  # supplementary groups are set
    event = node.events.wait(lambda e: e.type.value == "exec"
                             and e.fields.get("command") == "id -un; pwd; id -Gn; exit 7")
    assert event.fields["exit_code"] == 7
    assert event.user == "alice"
    assert not event.success
    start = node.events.wait(lambda e: e.type.value == "session.start"
                             and _session_of(e) == _session_of(event))
    assert start.fields["login"] == node.login
    assert start.fields["server_labels"] == NODE_LABELS
    assert start.fields["remote_addr"].startswith("127.0.0.1:")
    assert start.cluster == CLUSTER
    end = node.events.wait(lambda e: e.type.value == "session.end"
                           and _session_of(e) == _session_of(event))
    assert end.fields["exit_status"] == 7
    assert end.fields["participants"] == ["alice"]
    assert end.fields["bytes_out"] == len(result.stdout)


def test_exit_status_zero_stdin_and_stderr(node: Node) -> None:
    key = node.user()
    result = subprocess.run([*node.ssh_args(key), "cat; echo oops >&2"], input="piped in\n",
                            capture_output=True, text=True, timeout=20, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "piped in\n"
    assert result.stderr == "oops\n"


def test_a_command_ends_without_eof_from_the_client(node: Node) -> None:
    """``ssh host 'exit 7'`` typed at a terminal never closes stdin: the session must end when
    the command exits and its output is drained, not wait for the client's EOF."""
    proc = subprocess.Popen([*node.ssh_args(node.user()), "echo done; exit 7"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=clean_env())
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"done\n"
        assert proc.wait(timeout=15) == 7  # while its stdin is still open
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdin.close()
        proc.stdout.close()


def test_exit_signal_is_reported(node: Node) -> None:
    result = node.ssh(node.user(), "echo before; kill -TERM $$")
    assert result.returncode == 255  # OpenSSH's exit code for a remote signal
    assert result.stdout == "before\n"
    node.events.wait(lambda e: e.type.value == "session.end"
                     and e.fields.get("exit_status") == "TERM")


def test_signals_from_the_client_reach_the_process(node: Node) -> None:
    # OpenSSH's client never sends "signal" requests; asyncssh's does.
    key = node.user()

    async def run() -> asyncssh.SSHCompletedProcess:
        client_key = asyncssh.import_private_key(key.key.read_text())
        cert = asyncssh.import_certificate(key.cert.read_text())
        async with asyncssh.connect("127.0.0.1", int(node.port), username=node.login,
                                    client_keys=[(client_key, cert)], known_hosts=None,
                                    agent_path=None) as conn:
            process = await conn.create_process("echo started; sleep 30")
            assert await process.stdout.readline() == "started\n"
            process.send_signal("TERM")
            return await process.wait(timeout=10)

    result = asyncio.run(run())
    assert result.exit_signal is not None
    assert result.exit_signal[0] == "TERM"


def test_login_environment(node: Node) -> None:
    env = clean_env(LANG="C.UTF-8", LC_TIME="C", SECRET_VAR="x")
    result = node.ssh(node.user(), "env", "-o", "SendEnv=LANG LC_* SECRET_VAR", env=env)
    assert result.returncode == 0, result.stderr
    got = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    entry = pwd.getpwnam(node.login)
    assert got["HOME"] == entry.pw_dir
    assert got["USER"] == got["LOGNAME"] == node.login
    assert got["SHELL"] == entry.pw_shell
    assert got["LANG"] == "C.UTF-8"
    assert got["LC_TIME"] == "C"
    assert "SECRET_VAR" not in got
    assert got["SSH_LIMEN_USER"] == "alice"
    assert got["SSH_LIMEN_CLUSTER_NAME"] == CLUSTER
    assert got["SSH_CONNECTION"].startswith("127.0.0.1 ")
    assert len(got["SSH_SESSION_ID"]) == 36
    assert "SSH_TTY" not in got  # no PTY requested


def test_handle_socket_serves_a_connected_socket_with_the_given_client_address(
        node: Node) -> None:
    """The tunnel's entry point: a connected socket and the user's address as the proxy
    saw it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept_one() -> None:
        conn, _ = listener.accept()
        listener.close()
        asyncio.run_coroutine_threadsafe(
            node.server.handle_socket(conn, "203.0.113.7:4242"), node.loop)

    thread = threading.Thread(target=accept_one, daemon=True)
    thread.start()
    key = node.user()
    args = node.ssh_args(key)
    args[args.index("-p") + 1] = str(port)
    result = subprocess.run([*args, "echo $SSH_CLIENT"], capture_output=True, text=True,
                            timeout=20, check=False, stdin=subprocess.DEVNULL)
    thread.join(5)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("203.0.113.7 4242 ")
    node.events.wait(lambda e: e.type.value == "session.start"
                     and e.fields.get("remote_addr") == "203.0.113.7:4242")


def test_max_connections_per_user(node: Node) -> None:
    key = node.user(("single",), username="carol")
    with _ssh_running(node, key):
        result = node.ssh(key, "echo second")
        assert result.returncode == 255
        assert "at most 1 concurrent connections" in result.stderr
    node.events.wait(lambda e: e.type.value == "access.denied"
                     and e.fields.get("rule") == "options.max_connections")


# ------------------------------------------------------------------------ PTY and recording


def _read_until(fd: int, needle: bytes, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"did not see {needle!r}; got {data!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    return data


def _read_to_end(fd: int, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the ssh client exited and closed the terminal
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the ssh client did not finish; got {data!r}")


def _spawn_in_pty(args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave,
                            env=clean_env(TERM="xterm"), start_new_session=True)
    os.close(slave)
    return proc, master


def test_interactive_shell_is_recorded_byte_for_byte(node: Node) -> None:
    key = node.user()
    proc, master = _spawn_in_pty(node.ssh_args(key, "-tt", "-q"))
    try:
        seen = _read_until(master, b"$ ")  # bash's prompt
        os.write(master, b"echo hi-$((40+2)) \xc3\xa9t\xc3\xa9\r")
        seen += _read_until(master, b"hi-42 \xc3\xa9t\xc3\xa9\r\n")
        os.write(master, b"printf '\\033[1mbold\\033[0m\\n'; exit 3\r")
        seen += _read_to_end(master)
        assert proc.wait(10) == 3
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    end = node.events.wait(lambda e: e.type.value == "session.end"
                           and e.fields.get("exit_status") == 3 and e.fields.get("recorded"))
    session_id = _session_of(end)
    start = node.events.wait(lambda e: e.type.value == "session.start"
                             and _session_of(e) == session_id)
    assert start.fields["interactive"] is True
    cast_path = recordings_dir(node.data_dir) / f"{session_id}.cast"
    wait_for(cast_path.exists, 10, "the recording in the recordings directory")
    cast = read_cast(cast_path)
    assert cast.output() == seen  # what the terminal showed, byte for byte
    assert b"\x1b[1mbold\x1b[0m" in cast.output()
    assert cast.header.title == session_id
    assert cast.header.env["TERM"] == "xterm"
    assert cast.header.limen["user"] == "alice"
    assert not cast.incomplete
    assert all(e.code != "i" for e in cast.events)  # input is not recorded by default
    meta = json.loads((recordings_dir(node.data_dir) / f"{session_id}.json").read_text())
    assert meta["login"] == node.login
    assert meta["incomplete"] is False
    assert not list(sessions_dir(node.data_dir).glob(f"{session_id}*"))


def test_window_resize_reaches_the_shell_and_the_recording(node: Node) -> None:
    key = node.user()
    proc, master = _spawn_in_pty(node.ssh_args(key, "-tt", "-q"))
    try:
        _read_until(master, b"$ ")
        os.write(master, b"stty size\r")
        _read_until(master, b"24 80")
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.kill(proc.pid, signal.SIGWINCH)
        _read_until(master, b"$ ")  # readline redraws its prompt on SIGWINCH
        os.write(master, b"stty size\r")
        _read_until(master, b"40 120")
        os.write(master, b"exit\r")
        _read_to_end(master)
        proc.wait(10)
    finally:
        os.close(master)
    end = node.events.wait(lambda e: e.type.value == "session.end" and e.fields.get("recorded")
                           and e.fields.get("exit_status") == 0)
    path = recordings_dir(node.data_dir) / f"{_session_of(end)}.cast"
    wait_for(path.exists, 10, "the recording")
    cast = read_cast(path)
    assert (cast.header.width, cast.header.height) == (80, 24)
    assert [e.data for e in cast.events if e.code == "r"] == ["120x40"]


# ------------------------------------------------------------------------ file transfer


def test_scp_both_ways_in_sftp_and_legacy_modes(node: Node, tmp_path: Path) -> None:
    key = node.user()
    home = Path(pwd.getpwnam(node.login).pw_dir)
    payload = os.urandom(300_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    for mode, flags in (("sftp", []), ("scp", ["-O"])):
        remote = f"upload-{mode}.bin"
        up = subprocess.run(["scp", *flags, *node.file_options(key), str(source),
                             f"{node.login}@127.0.0.1:{remote}"],
                            capture_output=True, text=True, timeout=30, check=False)
        assert up.returncode == 0, up.stderr
        assert (home / remote).read_bytes() == payload
        assert (home / remote).stat().st_uid == pwd.getpwnam(node.login).pw_uid  # not root
        back = tmp_path / f"back-{mode}.bin"
        down = subprocess.run(["scp", *flags, *node.file_options(key),
                               f"{node.login}@127.0.0.1:{remote}", str(back)],
                              capture_output=True, text=True, timeout=30, check=False)
        assert down.returncode == 0, down.stderr
        assert back.read_bytes() == payload
    sftp = node.events.wait(lambda e: e.type.value == "sftp" and e.fields.get("action") == "end")
    assert sftp.success
    scp_up = node.events.wait(lambda e: e.type.value == "scp"
                              and e.fields.get("action") == "upload")
    assert scp_up.fields["path"] == "upload-scp.bin"
    node.events.wait(lambda e: e.type.value == "scp" and e.fields.get("action") == "download")


def test_files_are_never_served_as_root(node: Node, tmp_path: Path) -> None:
    if not IS_ROOT:
        pytest.skip("needs root to create a file the session user cannot read")
    shared = Path(tempfile.mkdtemp(prefix="limen-node-"))  # the session user can traverse it
    shared.chmod(0o755)
    secret = shared / "root-only"
    secret.write_text("root secret")
    secret.chmod(0o600)
    (shared / "readable").write_text("public")
    (shared / "readable").chmod(0o644)
    key = node.user()
    back = tmp_path / "stolen"
    result = subprocess.run(["scp", *node.file_options(key),
                             f"{node.login}@127.0.0.1:{secret}", str(back)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    assert "Permission denied" in result.stderr
    assert not back.exists()
    result = subprocess.run(["scp", *node.file_options(key),
                             f"{node.login}@127.0.0.1:{shared / 'readable'}", str(back)],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert back.read_text() == "public"
    shutil.rmtree(shared)


def test_sftp_batch(node: Node, tmp_path: Path) -> None:
    key = node.user()
    (tmp_path / "a.txt").write_text("alpha\n")
    batch = tmp_path / "batch"
    batch.write_text(f"mkdir sftp-dir\ncd sftp-dir\nput {tmp_path / 'a.txt'} a.txt\n"
                     f"ls\nget a.txt {tmp_path / 'b.txt'}\nrm a.txt\ncd ..\nrmdir sftp-dir\n")
    result = subprocess.run(["sftp", "-b", str(batch), *node.file_options(key),
                             f"{node.login}@127.0.0.1"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "b.txt").read_text() == "alpha\n"
    assert "a.txt" in result.stdout
    for action, path in (("mkdir", "sftp-dir"), ("remove", "a.txt"), ("rmdir", "sftp-dir")):
        node.events.wait(lambda e, a=action, p=path: e.type.value == "sftp"
                         and e.fields.get("action") == a and e.fields["path"].endswith(p))
    opened = node.events.wait(lambda e: e.type.value == "sftp"
                              and e.fields.get("action") == "open"
                              and e.fields["path"].endswith("sftp-dir/a.txt")
                              and "write" in e.fields.get("flags", ""))
    assert opened.user == "alice"


def test_file_copy_refused_when_roles_disable_it(node: Node, tmp_path: Path) -> None:
    key = node.user(("nocopy",))
    (tmp_path / "f").write_text("x")
    result = subprocess.run(["scp", *node.file_options(key), str(tmp_path / "f"),
                             f"{node.login}@127.0.0.1:f"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode != 0
    event = node.events.wait(lambda e: e.type.value == "sftp" and not e.success)
    assert "disabled" in event.fields["reason"]


# ------------------------------------------------------------------------ forwarding


@contextlib.contextmanager
def _echo_server() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    while data := conn.recv(65536):
                        conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _echo_through(port: int, payload: bytes) -> bytes:
    def attempt() -> bytes | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(payload)
                conn.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                return data or None
        except OSError:
            return None
    return wait_for(attempt, 10, f"an echo through port {port}")


@contextlib.contextmanager
def _ssh_running(node: Node, key: UserKey, *extra: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*node.ssh_args(key, "-o", "ExitOnForwardFailure=yes", *extra),
                             "echo ready; sleep 30"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=clean_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == "ready\n", proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        # SIGKILL, not SIGTERM: Debian's ssh 9.2 sometimes misses a SIGTERM that arrives just
        # before it polls (its loop then sleeps for minutes); nothing here needs a clean exit.
        proc.kill()
        proc.communicate(timeout=10)


def test_local_and_remote_port_forwarding(node: Node) -> None:
    key = node.user()
    with _echo_server() as echo_port:
        local = free_port()
        with _ssh_running(node, key, "-L", f"{local}:127.0.0.1:{echo_port}"):
            assert _echo_through(local, b"through -L") == b"through -L"
        event = node.events.wait(lambda e: e.type.value == "port"
                                 and e.fields.get("action") == "local" and e.success)
        assert event.fields["addr"] == f"127.0.0.1:{echo_port}"
        remote = free_port()
        with _ssh_running(node, key, "-R", f"{remote}:127.0.0.1:{echo_port}"):
            assert _echo_through(remote, b"through -R") == b"through -R"
        node.events.wait(lambda e: e.type.value == "port" and e.fields.get("action") == "remote"
                         and e.success)


def test_port_forwarding_refused_when_roles_disable_it(node: Node) -> None:
    key = node.user(("noforward",))
    with _echo_server() as echo_port:
        local = free_port()
        proc = subprocess.Popen([*node.ssh_args(key, "-N", "-L",
                                                f"{local}:127.0.0.1:{echo_port}")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=clean_env())
        try:
            def refused() -> bool:
                try:
                    conn = socket.create_connection(("127.0.0.1", local), timeout=5)
                except OSError:
                    return False  # ssh is not listening yet
                with conn:  # ssh accepted; the node refuses the channel: closed, no echo
                    try:
                        conn.sendall(b"x")
                        conn.shutdown(socket.SHUT_WR)
                        return conn.recv(10) == b""
                    except OSError:
                        return True
            wait_for(refused, 10, "the forwarded connection to be closed")
        finally:
            proc.kill()  # not SIGTERM: this ssh build can miss it (poll race), see _ssh_running
            _, stderr = proc.communicate(timeout=10)
    assert "prohibited" in stderr or "denied" in stderr
    event = node.events.wait(lambda e: e.type.value == "port" and not e.success)
    assert "disabled by the user's roles" in event.fields["reason"]


def test_agent_forwarding_socket_belongs_to_the_session_user(node: Node) -> None:
    agent = SshAgent().start()
    try:
        key = node.user(agent_forwarding=True)
        env = clean_env(SSH_AUTH_SOCK=agent.socket)
        # the agent's socket file appears (bind) just before it listens: retry until it does
        wait_for(lambda: subprocess.run(["ssh-add", str(key.key)], env=env,
                                        capture_output=True, check=False).returncode == 0,
                 10, "ssh-add to reach the agent")
        result = node.ssh(key, 'stat -c "%U %a" "$(dirname "$SSH_AUTH_SOCK")"; ssh-add -l',
                          "-A", env=env)
        assert result.returncode == 0, result.stderr
        owner_mode, listing = result.stdout.splitlines()[:2]
        assert owner_mode == f"{node.login} 700"
        assert "ED25519" in listing
        # without permit-agent-forwarding in the certificate: no socket
        plain = node.user()
        result = node.ssh(plain, 'echo "[$SSH_AUTH_SOCK]"', "-A", env=env)
        assert result.stdout == "[]\n"
    finally:
        agent.stop()


# ------------------------------------------------------------------------ refusals


def _denied(node: Node, key: UserKey, *, login: str | None = None) -> tuple[str, AuditEvent]:
    result = node.ssh(key, "echo should-not-run", login=login)
    assert result.returncode == 255
    assert "should-not-run" not in result.stdout
    return result.stderr, node.events.wait(
        lambda e: e.type.value == "access.denied" and e.fields.get("action") == "session"
        and e.fields.get("login") == (login or node.login)
        and e.fields.get("connection_id") not in _seen_denials, what="access.denied")


_seen_denials: set[str] = set()


def test_login_not_allowed_by_roles(node: Node) -> None:
    key = node.user(logins=(node.login, "daemon"))
    stderr, event = _denied(node, key, login="daemon")
    _seen_denials.add(event.fields["connection_id"])
    assert "access denied" in stderr
    assert event.fields["rule"] == "allow.logins" or "login" in event.fields["reason"]


def test_node_labels_not_matched(node: Node) -> None:
    key = node.user(("prod-only",))
    stderr, event = _denied(node, key)
    _seen_denials.add(event.fields["connection_id"])
    assert "access denied" in stderr
    assert "label" in event.fields["reason"]


def test_deny_rule_names_the_role(node: Node) -> None:
    key = node.user(("denied",))
    stderr, event = _denied(node, key)
    _seen_denials.add(event.fields["connection_id"])
    assert event.fields["role"] == "denied"
    assert event.fields["rule"].startswith("deny.")
    assert "access denied" in stderr


def _auth_refused(node: Node, key: UserKey, reason: str) -> None:
    result = node.ssh(key, "echo should-not-run")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    node.events.wait(lambda e: e.type.value == "auth" and reason in e.fields.get("reason", ""),
                     what=f"an auth event with {reason!r}")


def test_expired_certificate(node: Node) -> None:
    key = node.user(now=datetime.now(UTC) - timedelta(hours=2), ttl=timedelta(minutes=5))
    _auth_refused(node, key, "expired")


def test_certificate_of_another_ca(node: Node) -> None:
    other = CertAuthority.generate(CLUSTER, CertAuthorityType.USER)
    _auth_refused(node, node.user(ca=other), "untrusted CA")


def test_host_certificate_presented_as_user_certificate(node: Node) -> None:
    # OpenSSH will not offer a host certificate for user authentication; asyncssh will.
    key = node.user(host_cert=True)

    async def offer() -> None:
        client_key = asyncssh.import_private_key(key.key.read_text())
        cert = asyncssh.import_certificate(key.cert.read_text())
        async with asyncssh.connect("127.0.0.1", int(node.port), username=node.login,
                                    client_keys=[(client_key, cert)], known_hosts=None,
                                    agent_path=None):
            pass

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(offer())
    node.events.wait(lambda e: e.type.value == "auth"
                     and "host certificate was presented" in e.fields.get("reason", ""))


def test_plain_key_is_refused(node: Node) -> None:
    key = node.user()
    key.cert.unlink()
    _auth_refused(node, key, "plain public key")


def test_passwords_are_not_offered(node: Node) -> None:
    result = node.ssh(node.user(), "true", "-o",
                      "PreferredAuthentications=password,keyboard-interactive")
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr


def test_principal_not_in_certificate(node: Node) -> None:
    result = node.ssh(node.user(), "true", login="root")
    assert result.returncode == 255
    node.events.wait(lambda e: e.type.value == "auth" and e.fields.get("login") == "root"
                     and "principal" in e.fields.get("reason", ""))


def test_garbage_on_the_socket_does_not_hurt_the_server(node: Node) -> None:
    host, port = "127.0.0.1", int(node.port)
    for size in (0, 1, 17, 300, 5000):
        for prefix in (b"", b"SSH-2.0-fuzz\r\n"):
            with contextlib.suppress(OSError), \
                    socket.create_connection((host, port), timeout=5) as conn:
                conn.sendall(prefix + os.urandom(size))
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(5)
                while conn.recv(4096):
                    pass
    assert node.ssh(node.user(), "echo alive").stdout == "alive\n"


# ------------------------------------------------------------------------ timeouts


def test_idle_timeout_disconnects_with_a_message(node: Node) -> None:
    key = node.user(("idle",))
    started = time.monotonic()
    result = node.ssh(key, "sleep 20")
    assert time.monotonic() - started < 10
    assert result.returncode == 255
    assert "idle timeout" in result.stderr
    node.events.wait(lambda e: e.type.value == "client.disconnect"
                     and "idle timeout" in e.fields.get("reason", ""))


def test_session_ends_when_the_certificate_expires(node: Node) -> None:
    # valid for 3 more seconds (signed "in the past" rather than waiting for a long TTL)
    key = node.user(("expiring",), ttl=timedelta(seconds=3))
    started = time.monotonic()
    result = node.ssh(key, "echo started; sleep 20")
    assert time.monotonic() - started < 10
    assert result.returncode == 255
    assert result.stdout == "started\n"
    assert "certificate has expired" in result.stderr
    node.events.wait(lambda e: e.type.value == "client.disconnect"
                     and "expired" in e.fields.get("reason", ""))


# ------------------------------------------------------------------------ crash recovery

AGENT_SCRIPT = """
import asyncio, sys
from pathlib import Path
from limen.agents.node import NodeServerConfig, NodeSSHServer, StoreAccessPolicy
from limen.api.resources import Kind, Resource
from limen.backend.memory import MemoryBackend
from limen.ca.keys import load_public_key
from limen.ca.host_credentials import HostCredentials
from limen.events import MemoryEmitter
from limen.recording import LocalDirectorySink, recordings_dir
from limen.services.resource_store import ResourceStore

async def main() -> None:
    base = Path(sys.argv[1])
    login = sys.argv[2]
    ca = load_public_key((base / "user_ca.pub").read_text())
    store = ResourceStore(MemoryBackend())
    await store.put(Resource(Kind.ROLE, "dev", spec={"allow": {"logins": [login],
                                                               "node_labels": {"*": "*"}}}))
    data = base / "data"
    server = NodeSSHServer(
        NodeServerConfig(HostCredentials.load(base / "creds"), {"env": "dev"}, data,
                         recording_flush_interval=0.05),
        lambda: {"main": (ca,)}, StoreAccessPolicy(store, {"env": "dev"}), MemoryEmitter(),
        LocalDirectorySink(recordings_dir(data)))
    print(await server.listen("127.0.0.1:0"), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_killed_agent_leaves_a_recording_completed_on_next_start(node: Node,
                                                                 tmp_path: Path) -> None:
    base = tmp_path / "agent"
    base.mkdir()
    _host_credentials(node.host_ca).save(base / "creds")
    (base / "user_ca.pub").write_text(node.user_ca.ssh_public_keys()[0])
    (base / "agent.py").write_text(AGENT_SCRIPT)
    agent = subprocess.Popen([sys.executable, str(base / "agent.py"), str(base), node.login],
                             stdout=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert agent.stdout is not None
        address = agent.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), address
        key = node.user()
        args = node.ssh_args(key, "-tt", "-q")
        args[args.index("-p") + 1] = address.rsplit(":", 1)[1]
        proc, master = _spawn_in_pty(args)
        try:
            _read_until(master, b"$ ")
            os.write(master, b"echo crash-$((6*7))\r")
            _read_until(master, b"crash-42")
            parts = sessions_dir(base / "data")
            wait_for(lambda: any(b"crash-42" in p.read_bytes() for p in parts.glob("*.part")),
                     10, "the output to be flushed to the .part file")
            agent.send_signal(signal.SIGKILL)
            agent.wait(10)
            assert proc.wait(10) == 255  # the client saw the connection die
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
    finally:
        if agent.poll() is None:
            agent.kill()
        agent.communicate(timeout=10)
    (part,) = sessions_dir(base / "data").glob("*.cast.part")
    session_id = part.name.removesuffix(".cast.part")
    restarted = NodeSSHServer(
        NodeServerConfig(HostCredentials.load(base / "creds"), {}, base / "data"),
        lambda: {}, StoreAccessPolicy(ResourceStore(MemoryBackend()), {}), EventLog(),
        LocalDirectorySink(recordings_dir(base / "data")))
    asyncio.run(restarted.start())
    assert restarted.recovered == [session_id]
    cast = read_cast(recordings_dir(base / "data") / f"{session_id}.cast")
    assert cast.incomplete
    assert cast.header.limen["incomplete"] is True
    assert b"crash-42" in cast.output()
    meta = json.loads((recordings_dir(base / "data") / f"{session_id}.json").read_text())
    assert meta["incomplete"] is True
    assert meta["user"] == "alice"
    assert not list(sessions_dir(base / "data").iterdir())


def test_recording_modes_when_the_recording_cannot_be_written(node: Node,
                                                              tmp_path: Path) -> None:
    """strict: no recording, no session; best_effort (the default): the session goes on."""
    broken = tmp_path / "not-a-directory"
    broken.write_text("")

    async def build() -> tuple[NodeSSHServer, str]:
        server = NodeSSHServer(
            NodeServerConfig(_host_credentials(node.host_ca), NODE_LABELS, broken),
            lambda: ssh_trust_map([node.user_ca], CertAuthorityType.USER),
            StoreAccessPolicy(node.store, NODE_LABELS, cluster=CLUSTER), EventLog(),
            LocalDirectorySink(tmp_path / "recordings"))
        return server, await server.listen("127.0.0.1:0")

    server, address = node.call(build())
    try:
        port = address.rsplit(":", 1)[1]
        for roles, code, text in ((("strict",), 255, "cannot be recorded"),
                                  (("dev",), 0, "went on")):
            args = node.ssh_args(node.user(roles), "-tt")
            args[args.index("-p") + 1] = port
            result = subprocess.run([*args, "echo went on"], capture_output=True, text=True,
                                    timeout=20, check=False, stdin=subprocess.DEVNULL)
            assert result.returncode == code, result
            assert text in result.stdout + result.stderr
    finally:
        node.call(server.close())


def test_close_ends_sessions_cleanly(node: Node, tmp_path: Path) -> None:
    """A second server in the same loop: close() hangs up a running session with a message,
    reports its exit, finishes its recording and audits the end."""
    events = EventLog()
    data = tmp_path / "data"

    async def build() -> tuple[NodeSSHServer, str]:
        server = NodeSSHServer(
            NodeServerConfig(_host_credentials(node.host_ca), NODE_LABELS, data),
            lambda: ssh_trust_map([node.user_ca], CertAuthorityType.USER),
            StoreAccessPolicy(node.store, NODE_LABELS, cluster=CLUSTER), events,
            LocalDirectorySink(recordings_dir(data)))
        return server, await server.listen("127.0.0.1:0")

    server, address = node.call(build())
    key = node.user()
    args = node.ssh_args(key, "-tt", "-q")
    args[args.index("-p") + 1] = address.rsplit(":", 1)[1]
    proc, master = _spawn_in_pty(args)
    future: Future[None] | None = None
    try:
        _read_until(master, b"$ ")
        events.wait(lambda e: e.type.value == "session.start")
        future = asyncio.run_coroutine_threadsafe(server.close(), node.loop)
        tail = _read_to_end(master)
        assert b"the node agent is stopping" in tail
        proc.wait(10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert future is not None
    future.result(20)
    end = events.wait(lambda e: e.type.value == "session.end")
    assert end.fields["recorded"] is True
    assert (recordings_dir(data) / f"{_session_of(end)}.cast").exists()
    events.wait(lambda e: e.type.value == "client.disconnect")
