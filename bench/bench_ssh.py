"""SSH through Limen's proxy and reverse tunnel, next to OpenSSH references (not a test).

Issue #20's "Show it works". Five paths, measured in the same run on loopback, all with
aes128-gcm@openssh.com and the real OpenSSH client forced to ``-o KexAlgorithms=
curve25519-sha256`` (the Limen proxy and node speak curve25519, OpenSSH's sshd would pick
sntrup761x25519: setup compares like with like; the negotiated KEX is printed per path):

* ``direct``    OpenSSH -> stock sshd (the target)
* ``sshd-jump`` OpenSSH -> a second stock sshd as bastion (``ssh -J``) -> the target sshd
* ``limen``     OpenSSH -> Limen proxy SSH front (``ssh -J``) -> reverse tunnel -> node SSH
                server (the node agent's ``NodeSSHServer`` when it is available, else a
                stand-in asyncssh server; the output says which)
* ``limen-pc``  OpenSSH with the ``lmsh config`` ProxyCommand (``lmsh proxy ssh``: one TLS
                connection to the proxy's web port, ALPN ``limen-ssh-proxy``) -> reverse
                tunnel -> the same node server
* ``lmsh``      ``lmsh ssh limenbench@node1 CMD`` as a user runs it after ``lmsh login`` (the
                profile in a private ``LIMEN_HOME``): lmsh execs OpenSSH with that ProxyCommand

Every session logs in as ``limenbench``, a test login whose shell is ``/bin/sh`` with an empty
home (``sh -c CMD`` reads no rc file; root's ``.bashrc`` would run on every command, as sshd and
the node run ``bash -c`` with ``SSH_CLIENT`` set); created with ``useradd`` when missing.

The proxy (with its auth server) and the agent (TunnelAgent + node server) run as two separate
Python processes, as they would on two machines. Measurements, each interleaved over the paths
in ``--repeat`` rounds (A-B-A-B: a shared machine's load drifts), median and rounds:

1. ``single``: ``ssh HOST 'cat > /dev/null'`` of ``--size-mib`` read from a sparse file;
2. ``parallel``: ``--parallel`` such sessions at once of ``--parallel-mib`` each, aggregate;
   both with CPU-s/GiB of the proxy (Limen proxy process, or the bastion sshd), the node (node
   agent, or the target sshd, each with the session commands it reaped) and the client
   (``getrusage(RUSAGE_CHILDREN)``: OpenSSH, its ProxyCommand or ``-W`` helper, lmsh; this
   process is a child subreaper so the helpers OpenSSH leaves behind are reaped and counted);
3. ``setup``: ``--setup-runs`` sequential ``ssh HOST true`` per path, p50/p99, client CPU/conn;
4. ``idle``: M concurrent sessions (asyncssh clients; direct, sshd-jump and limen), memory per
   session from ``/proc`` (VmRSS of the proxy and agent; PSS of the sshd processes);
5. ``client``: CPU of the ProxyCommand per connection, alone and inside ``ssh HOST true``
   (the line ``lmsh config`` writes, the ``lmsh proxy ssh`` spelling, and another tree's with
   ``--helper-before``), user + system from the reaped process's rusage.

The output is one table (MiB/s single and parallel with x bastion, setup p50/p99 with x ``-J``
setup, client CPU per connection, CPU-s/GiB) and the issue's targets, met or NOT met.

Usage: ``python bench/bench_ssh.py [--size-mib 1024] [--parallel 20 --parallel-mib 50]
[--repeat 3] [--setup-runs 200] [--idle 1000] [--skip single,parallel,setup,idle,client]
[--helper-before OTHER_TREE/src]``;
``--record`` adds the result under a dated heading at the end of bench/RESULTS.md's "## SSH"
section (earlier entries stay). Needs root (sshd, the test login, the node's user switch).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import pwd
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import _util

SSH = "/usr/bin/ssh"
SSHD = "/usr/sbin/sshd"
CIPHER = "aes128-gcm@openssh.com"
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
NODE_NAME = "node1"
BENCH_LOGIN = "limenbench"
"""The test login on both sshd and the node: shell ``/bin/sh`` (``sh -c CMD`` reads no rc
file), an empty home; created by :func:`ensure_login` when missing (needs root)."""
BENCH_HOME = Path("/var/lib/limen-bench")
KEX = "curve25519-sha256"
"""Forced on every OpenSSH client: the Limen node and proxy speak curve25519 (asyncssh has no
sntrup761), OpenSSH's sshd would pick sntrup761x25519; setup times compare like with like."""
PATHS = ("direct", "sshd-jump", "limen", "limen-pc", "lmsh")
RUSAGE_WRAPPER = """import os, resource, signal, sys
out, argv = sys.argv[1], sys.argv[2:]
signal.signal(signal.SIGHUP, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    os.execvp(argv[0], argv)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0)
os.dup2(null, 1)
os.waitpid(pid, 0)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out + ".tmp", "w") as file:
    file.write(f"{(usage.ru_utime + usage.ru_stime) * 1000:.3f}\\n")
os.rename(out + ".tmp", out)
"""
"""OpenSSH's ProxyCommand wrapper of :meth:`Bench._helper_cpu_in_ssh`: it lets go of OpenSSH's
pipes (so OpenSSH sees the ProxyCommand's end as before) and outlives OpenSSH's SIGHUP."""
LIMEN_PATHS = ("limen", "limen-pc", "lmsh")
BENCH_ROLE = {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "bench"},
              "spec": {"allow": {"logins": [BENCH_LOGIN], "node_labels": {"*": "*"}}}}


# ====================================================================== server processes


def receive_path() -> None:
    """asyncssh's receive path in a server process: Limen's (``limen.net.asyncssh_recv``,
    installed by ``limen.net.sshalgs``) unless ``BENCH_ASYNCSSH_RECV=stock``."""
    import limen.net.sshalgs  # noqa: F401 - installs Limen's receive path
    from limen.net import asyncssh_recv

    if os.environ.get("BENCH_ASYNCSSH_RECV", "limen") == "stock":
        asyncssh_recv.uninstall()
    print(f"asyncssh receive path: {'limen' if asyncssh_recv.installed() else 'stock'}",
          flush=True)


def serve_proxy(directory: Path) -> None:
    """Auth + proxy SSH service; writes credentials for the agent and the user, then
    ``proxy.json``; runs until SIGTERM."""
    receive_path()
    asyncio.run(_serve_proxy(directory))


async def _serve_proxy(directory: Path) -> None:
    from limen.api.loader import SourceDocument
    from limen.api.resources import Origin
    from limen.api.validation import validate
    from limen.auth.auth_service import AuthService
    from limen.auth.client import AuthClient
    from limen.backend.factory import open_backend
    from limen.ca.authority import CertAuthorityType
    from limen.ca.host_credentials import HostCredentials
    from limen.ca.identity import Identity, SystemRole
    from limen.ca.keys import (
        generate_private_key,
        private_key_to_openssh,
        private_key_to_pem,
        public_key_to_openssh,
    )
    from limen.ca.ssh_certs import sign_host_cert, sign_user_cert
    from limen.ca.x509_certs import certificate_to_pem, sign_client_cert
    from limen.client.profile import Profile, ProfileStore
    from limen.config import ClusterSettings, Listeners, Settings
    from limen.events.emitter import MemoryEmitter
    from limen.net.address import bind_tcp, socket_address
    from limen.net.ssh_tls_wire import ALPN_SSH
    from limen.proxy.ssh_tls_route import SSHTLSRoute
    from limen.proxy.sshproxy import ProxySSHService
    from limen.proxy.tls_router import TLSRouter

    settings = Settings(data_dir=directory / "data",
                        cluster=ClusterSettings(name="bench", second_factor="off"),
                        listeners=Listeners().randomized())
    settings.data_dir.mkdir(mode=0o700)
    backend = open_backend(settings.data_dir)
    emitter = MemoryEmitter(maxlen=1000)
    auth = AuthService(settings, backend, emitter)
    await auth.start()
    await auth.server.apply(validate([SourceDocument("<bench>", 0, 1, BENCH_ROLE)]),
                            Origin.API, actor="bench")
    creds = auth.issue_local_credentials(SystemRole.PROXY, ["127.0.0.1", "localhost"])
    client = AuthClient(auth.address, creds)
    proxy = ProxySSHService(settings, creds, client, emitter)
    listeners = await proxy.start()
    route = SSHTLSRoute(proxy.connector)  # the web port's SSH route (no HTTP served here)
    router = TLSRouter(creds.server_ssl(client_cas=creds.tls_cas()), asyncio.Protocol,
                       {ALPN_SSH: route.protocol})
    web_sock = bind_tcp("127.0.0.1:0")
    listeners["web"] = socket_address(web_sock)
    await router.start(web_sock)

    key = generate_private_key()
    certs = auth.server.issue_host_certs("bench-node", NODE_NAME, SystemRole.NODE,
                                         public_key_to_openssh(key.public_key()),
                                         ["127.0.0.1"])
    HostCredentials(
        cluster="bench", host_id="bench-node", role="node", hostname=NODE_NAME,
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
        tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert,
        user_ca_keys=tuple(certs.user_ca_keys), host_ca_keys=tuple(certs.host_ca_keys),
    ).save(directory / "node-creds")
    user_ca = auth.server.authorities.get(CertAuthorityType.USER)
    host_ca = auth.server.authorities.get(CertAuthorityType.HOST)
    ukey = generate_private_key()
    (directory / "id").write_text(private_key_to_openssh(ukey))
    (directory / "id").chmod(0o600)
    identity = Identity(username="bench", cluster="bench", roles=("bench",),
                        logins=(BENCH_LOGIN,))
    (directory / "id-cert.pub").write_bytes(
        sign_user_cert(user_ca, ukey.public_key(), identity, timedelta(hours=4)) + b"\n")
    (directory / "known_hosts").write_text(
        "".join(f"@cert-authority * {k}\n" for k in host_ca.ssh_public_keys()))
    tls_ca = auth.server.authorities.get(CertAuthorityType.TLS)
    tls_cert = sign_client_cert(tls_ca, ukey.public_key(), identity, timedelta(hours=4))
    ProfileStore(directory / "limen-home").save_login(  # what lmsh login leaves for lmsh
        Profile(proxy=listeners["web"], user="bench", cluster="bench",
                expires=tls_cert.not_valid_after_utc.isoformat(), roles=("bench",),
                logins=(BENCH_LOGIN,), ssh_proxy=listeners["ssh_proxy"]),
        private_key=private_key_to_openssh(ukey).encode(),
        public_key=(public_key_to_openssh(ukey.public_key()) + "\n").encode(),
        ssh_cert=(directory / "id-cert.pub").read_bytes(),
        tls_cert=certificate_to_pem(tls_cert).encode(), tls_cas={"bench": creds.tls_ca_pem},
        host_ca_lines=[f"@cert-authority * {k}" for k in host_ca.ssh_public_keys()])
    (directory / "user_ca.pub").write_text("\n".join(user_ca.ssh_public_keys()) + "\n")
    skey = generate_private_key()  # host key + certificate for the reference sshd
    (directory / "sshd_key").write_text(private_key_to_openssh(skey))
    (directory / "sshd_key").chmod(0o600)
    (directory / "sshd_key-cert.pub").write_bytes(sign_host_cert(
        host_ca, skey.public_key(), "sshd-ref", "sshd-ref", ["127.0.0.1", "sshd-bastion"],
        timedelta(hours=4), SystemRole.NODE) + b"\n")
    _write_atomic(directory / "proxy.json", json.dumps(listeners))

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    router.stop()
    await route.stop()
    await proxy.stop()
    await client.close()
    await auth.stop()
    await backend.close()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def serve_agent(directory: Path) -> None:
    receive_path()
    asyncio.run(_serve_agent(directory))


async def _serve_agent(directory: Path) -> None:
    from limen.ca.host_credentials import HostCredentials
    from limen.tunnel import TunnelAgent

    creds = HostCredentials.load(directory / "node-creds")
    listeners = json.loads((directory / "proxy.json").read_text())
    handler, label = await _node_handler(creds, directory, os.environ.get("BENCH_NODE", "real"))
    doc = {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
           "metadata": {"name": NODE_NAME, "labels": {"env": "bench"}},
           "spec": {"kind": "ssh", "hostname": NODE_NAME}}
    agent = TunnelAgent(listeners["tunnel"], creds, handler, lambda: doc)
    await agent.start()
    async with asyncio.timeout(30):
        await agent.connected.wait()
    _write_atomic(directory / "agent.json", json.dumps({"node": label}))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await agent.stop()


async def _node_handler(creds: Any, directory: Path, kind: str) -> tuple[Any, str]:
    """The node agent's SSH server (``real``), or the stand-in asyncssh server."""
    if kind == "real":
        with contextlib.suppress(ImportError):
            return await _real_node_handler(creds, directory), "NodeSSHServer (limen.agents.node)"
    return await _stand_in_handler(creds), "stand-in asyncssh server"


async def _real_node_handler(creds: Any, directory: Path) -> Any:
    from limen.agents.node import NodeServerConfig, NodeSSHServer, StoreAccessPolicy
    from limen.api.loader import SourceDocument
    from limen.api.validation import validate
    from limen.backend.memory import MemoryBackend
    from limen.ca.keys import load_public_key
    from limen.events.emitter import MemoryEmitter
    from limen.recording.sink import LocalDirectorySink, recordings_dir
    from limen.services.resource_store import ResourceStore

    store = ResourceStore(MemoryBackend())
    (role,) = validate([SourceDocument("<bench>", 0, 1, BENCH_ROLE)])
    await store.put(role)
    trust = {creds.cluster: tuple(load_public_key(k) for k in creds.user_ca_keys)}
    data_dir = directory / "node-data"
    node = NodeSSHServer(
        NodeServerConfig(creds, {"env": "bench"}, data_dir), lambda: trust,
        StoreAccessPolicy(store, {"env": "bench"}, cluster=creds.cluster),
        MemoryEmitter(maxlen=1000), LocalDirectorySink(recordings_dir(data_dir)))
    await node.start()

    async def handle(sock: socket.socket, request: Any) -> None:
        await node.handle_socket(sock, request.client_addr)

    return handle


async def _stand_in_handler(creds: Any) -> Any:
    """An asyncssh server per data socket: user certificates from the user CA; ``true``,
    ``cat > /dev/null`` and idle ``cat`` (reads stdin until EOF)."""
    import asyncssh

    from limen.ca.ssh_peer import host_key
    from limen.net.sshalgs import COMPRESSION_ALGS, ENCRYPTION_ALGS

    key, cert = host_key(creds)
    authorized = asyncssh.import_authorized_keys(
        "".join(f"cert-authority {k}\n" for k in creds.user_ca_keys))

    async def process(proc: Any) -> None:
        if (proc.command or "").startswith("cat"):
            while await proc.stdin.read(1 << 18):
                pass
        proc.exit(0)

    options = await asyncssh.SSHServerConnectionOptions.construct(
        server_host_keys=[(key, cert)], authorized_client_keys=authorized,
        process_factory=process, encoding=None, allow_pty=False,
        encryption_algs=list(ENCRYPTION_ALGS), compression_algs=list(COMPRESSION_ALGS))
    loop = asyncio.get_running_loop()

    async def handle(sock: socket.socket, _request: Any) -> None:
        await loop.create_connection(lambda: asyncssh.SSHServerConnection(loop, options),
                                     sock=sock)

    return handle


# ====================================================================== measurement


def ensure_login() -> str:
    """The test login (``BENCH_LOGIN``, shell ``/bin/sh``, empty home): created when missing
    (``useradd``, needs root), with a password field sshd does not read as locked (``*``)."""
    try:
        entry = pwd.getpwnam(BENCH_LOGIN)
    except KeyError:
        if os.geteuid() != 0:
            raise SystemExit(f"the test login {BENCH_LOGIN} does not exist; run once as root "
                             "to create it (useradd --system --shell /bin/sh)") from None
        BENCH_HOME.mkdir(mode=0o755, parents=True, exist_ok=True)
        subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir",
                        str(BENCH_HOME), "--shell", "/bin/sh", BENCH_LOGIN], check=True)
        subprocess.run(["usermod", "-p", "*", BENCH_LOGIN], check=True)
        entry = pwd.getpwnam(BENCH_LOGIN)
    if entry.pw_shell != "/bin/sh":
        raise SystemExit(f"the test login {BENCH_LOGIN} has shell {entry.pw_shell}, not /bin/sh")
    home = Path(entry.pw_dir)
    rc = [p.name for p in home.glob(".*")] if home.is_dir() else []
    if rc:
        raise SystemExit(f"the test login's home {home} is not empty: {rc}")
    return f"{BENCH_LOGIN} (shell {entry.pw_shell}: sh -c CMD, no rc file; home {home}, empty)"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid=,comm="], capture_output=True,
                         text=True, check=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in out.splitlines():
        p, pp, comm = line.split(None, 2)
        children.setdefault(int(pp), []).append((int(p), comm))
    found, todo = [], [pid]
    while todo:
        for child, comm in children.get(todo.pop(), []):
            if comm.startswith("sshd"):
                found.append(child)
            todo.append(child)
    return found


def children(pid: int) -> list[int]:
    """The live (or zombie) children of ``pid``, from ``/proc/*/stat``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` plus its reaped children (``utime stime cutime cstime``): an
    sshd master with its finished connections, the agent with the session commands it ran."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    """CPU seconds of this process's reaped children and their reaped descendants: the
    OpenSSH clients with their ProxyCommand/``-W`` helpers, ``lmsh``."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def become_subreaper() -> None:
    """Orphans of our children (OpenSSH does not wait for its ProxyCommand or ``ssh -W``, it
    sends SIGHUP) come back to this process, which reaps them: their CPU counts as client."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def serve_reaper(argv: list[str]) -> None:
    """Run ``argv`` (an sshd) as a child subreaper: the session processes sshd orphans (its
    privileged monitor may exit before the user's session process) come back here, not to
    the benchmark (whose reaped children count as client CPU); exits with ``argv``."""
    become_subreaper()
    child = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == child.pid:
            sys.exit(os.waitstatus_to_exitcode(status))


def _median_range(values: list[float], digits: int = 0) -> str:
    if not values:
        return "-"
    fmt = f"{{:.{digits}f}}"
    return (fmt.format(statistics.median(values)) + " ["
            + ", ".join(fmt.format(v) for v in values) + "]")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="limen-bench-ssh-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.rows: dict[str, dict[str, Any]] = {}
        self.sshd_masters: dict[int, int] = {}
        """The sshd listener under each reaper process (``--reap``)."""

    # -------------------------------------------------------------- processes

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        try:
            self._start()
            yield
        finally:
            for proc in reversed(self.procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            self.reap_orphans()

    def _wait_file(self, path: Path, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 60
        while not path.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{proc.args} failed; see {self.dir}")
            time.sleep(0.05)

    def _start(self) -> None:
        me = [sys.executable, str(Path(__file__).resolve())]
        log = (self.dir / "proxy.log").open("wb")
        env = {**os.environ, "BENCH_NODE": self.args.node,
               "BENCH_ASYNCSSH_RECV": self.args.asyncssh_recv}
        self.proxy = subprocess.Popen([*me, "--serve-proxy", str(self.dir)], stdout=log,
                                      stderr=subprocess.STDOUT, env=env)
        self.procs.append(self.proxy)
        self._wait_file(self.dir / "proxy.json", self.proxy)
        self.listeners = json.loads((self.dir / "proxy.json").read_text())
        log = (self.dir / "agent.log").open("wb")
        self.agent = subprocess.Popen([*me, "--serve-agent", str(self.dir)], stdout=log,
                                      stderr=subprocess.STDOUT, env=env)
        self.procs.append(self.agent)
        self._wait_file(self.dir / "agent.json", self.agent)
        self.node_label = json.loads((self.dir / "agent.json").read_text())["node"]
        os.makedirs("/run/sshd", exist_ok=True)
        self.sshd, self.sshd_port = self._sshd("target")
        self.bastion, self.bastion_port = self._sshd("bastion")
        proxy_host, proxy_port = self.listeners["ssh_proxy"].rsplit(":", 1)
        common = f"""
    Ciphers {CIPHER}
    KexAlgorithms {KEX}
    BatchMode yes
    LogLevel ERROR
    ControlMaster no
    ControlPath none
    IdentityAgent none
"""
        self.config = self.dir / "ssh_config"
        self.config.write_text(f"""
Host *
    User {BENCH_LOGIN}
    IdentityFile {self.dir}/id
    CertificateFile {self.dir}/id-cert.pub
    IdentitiesOnly yes
    UserKnownHostsFile {self.dir}/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes{common}
Host sshd-ref
    HostName 127.0.0.1
    Port {self.sshd_port}
Host sshd-bastion
    HostName 127.0.0.1
    Port {self.bastion_port}
Host proxy
    HostName {proxy_host}
    Port {proxy_port}
""")
        # what a user adds around `lmsh ssh`: the same cipher and key exchange as the others;
        # lmsh's own -o options (key, certificate, known_hosts, ProxyCommand) come first
        self.lmsh_config = self.dir / "lmsh_ssh_config"
        self.lmsh_config.write_text(f"Host *\n    GlobalKnownHostsFile /dev/null{common}")
        deadline = time.monotonic() + 30
        for path in ("direct", "sshd-jump"):
            while subprocess.run(self.ssh_cmd(path, "true"), capture_output=True).returncode:
                if time.monotonic() > deadline:
                    raise SystemExit(f"sshd did not come up; see {self.dir}/sshd-*.log")
                time.sleep(0.1)
        self.reap_orphans()

    def _sshd(self, name: str) -> tuple[subprocess.Popen[bytes], int]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = self.dir / f"sshd_config-{name}"
        config.write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {self.dir}/sshd_key
HostCertificate {self.dir}/sshd_key-cert.pub
TrustedUserCAKeys {self.dir}/user_ca.pub
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
StrictModes no
PermitRootLogin no
MaxStartups 200:30:400
MaxSessions 10
Ciphers {CIPHER}
""")
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--reap",
                                 SSHD, "-D", "-e", "-f", str(config)],
                                stdout=subprocess.DEVNULL,
                                stderr=(self.dir / f"sshd-{name}.log").open("wb"))
        self.procs.append(proc)
        deadline = time.monotonic() + 30
        while not (found := children(proc.pid)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sshd {name} did not start; see {self.dir}/sshd-{name}.log")
            time.sleep(0.02)
        self.sshd_masters[proc.pid] = found[0]
        return proc, port

    def ssh_cmd(self, path: str, command: str) -> list[str]:
        base = [SSH, "-F", str(self.config)]
        if path == "direct":
            return [*base, "sshd-ref", command]
        if path == "sshd-jump":
            return [*base, "-J", "sshd-bastion", "sshd-ref", command]
        if path == "limen-pc":
            return [*base, "-o", f"ProxyCommand {' '.join(self.proxy_command())} %r@%h:%p",
                    "-p", "3022", NODE_NAME, command]
        if path == "lmsh":  # as a user runs it after `lmsh login`
            return ["env", f"LIMEN_HOME={self.dir / 'limen-home'}", str(self.lmsh()), "ssh",
                    "-F", str(self.lmsh_config), f"{BENCH_LOGIN}@{NODE_NAME}", command]
        return [*base, "-J", "proxy", NODE_NAME, command]

    def lmsh(self) -> Path:
        return Path(sys.executable).with_name("lmsh")

    def proxy_command(self, spelling: str = "config") -> list[str]:
        """The ProxyCommand as the ``lmsh config`` block runs it (``config``: the interpreter
        with ``-I -S`` and ``limen.client.proxyssh_main``), as ``lmsh proxy ssh`` (``lmsh``:
        blocks written before) or as ``lmsh proxy ssh`` of the tree in ``--helper-before``
        (``before``: its ``src``, run as the console script runs it), with the user's
        LIMEN_HOME."""
        from limen.client.proxyssh_command import helper_command

        lmsh = str(self.lmsh())
        program = {
            "config": lambda: helper_command(lmsh),
            "lmsh": lambda: [lmsh, "proxy", "ssh"],
            "before": lambda: [sys.executable, "-c", "import sys; sys.path.insert(0, "
                               f"{str(self.args.helper_before)!r}); sys.argv[0] = 'lmsh'; "
                               "from limen.cli.lmsh_entry import main; main()",
                               "proxy", "ssh"],
        }[spelling]()
        return ["env", f"LIMEN_HOME={self.dir / 'limen-home'}", *program,
                "--proxy", self.listeners["web"], "--cluster", "bench"]

    def kex_used(self) -> dict[str, str]:
        """The key exchange each path's OpenSSH client negotiated (``ssh -v``), to show it."""
        found = {}
        for path in PATHS:
            if path not in self.args.paths.split(","):
                continue
            cmd = self.ssh_cmd(path, "true")
            at = cmd.index("ssh") + 1 if "ssh" in cmd else cmd.index(SSH) + 1
            done = subprocess.run([*cmd[:at], "-v", *cmd[at:]], capture_output=True,
                                  stdin=subprocess.DEVNULL, check=True)
            kex = [line.split("kex: algorithm:", 1)[1].strip()
                   for line in done.stderr.decode(errors="replace").splitlines()
                   if "kex: algorithm:" in line]
            found[path] = ", ".join(kex) or "?"
        self.reap_orphans()
        return found

    # -------------------------------------------------------------- CPU accounting

    def reap_orphans(self) -> None:
        """Wait for the OpenSSH helpers handed back to this process (ProxyCommand, ``-W``)."""
        keep = {p.pid for p in self.procs}
        deadline = time.monotonic() + 10
        while True:
            left = [pid for pid in children(os.getpid()) if pid not in keep]
            for pid in left:
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == pid:
                        left.remove(pid)
            if not left:
                return
            if time.monotonic() > deadline:
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline += 10
            time.sleep(0.005)

    def _settle(self, pids: list[int]) -> None:
        """Wait until the servers have reaped their per-connection children (sshd's session
        processes, the node's commands), so their CPU is in ``cutime``; 10 s at most."""
        masters = set(self.sshd_masters.values())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
                set(children(pid)) - masters for pid in pids):
            time.sleep(0.01)

    def servers(self, path: str) -> dict[str, list[int]]:
        """Which processes are the proxy and which the node on ``path``: an sshd is its
        reaper (``--reap``, with the orphans it reaped) and its listener."""

        def sshd(proc: subprocess.Popen[bytes]) -> list[int]:
            return [proc.pid, self.sshd_masters[proc.pid]]

        if path == "direct":
            return {"node": sshd(self.sshd)}
        if path == "sshd-jump":
            return {"proxy": sshd(self.bastion), "node": sshd(self.sshd)}
        return {"proxy": [self.proxy.pid], "node": [self.agent.pid]}

    def zero_file(self, mib: int) -> Path:
        """A sparse file of ``mib`` MiB of zeros: the clients' stdin (no ``head`` process)."""
        path = self.dir / f"zeros-{mib}"
        if not path.exists():
            with path.open("wb") as out:
                out.truncate(mib << 20)
        return path

    def batch(self, path: str, sessions: int, mib: int) -> tuple[float, dict[str, float]]:
        """``sessions`` concurrent ``ssh HOST 'cat > /dev/null'`` of ``mib`` MiB each:
        aggregate MiB/s and CPU-s/GiB of proxy, node and client."""
        servers = self.servers(path)
        source = self.zero_file(mib)
        cmd = self.ssh_cmd(path, "cat > /dev/null")
        cpu0 = {name: sum(map(tree_cpu, pids)) for name, pids in servers.items()}
        client0 = client_cpu()
        with _util.timed() as t, contextlib.ExitStack() as stack:
            procs = []
            for _ in range(sessions):
                stdin = stack.enter_context(source.open("rb"))
                procs.append(subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE))
            deadline = time.monotonic() + 120 + sessions * mib / 5  # >= 5 MiB/s, or hung
            failed = []
            for proc in procs:
                try:
                    err = proc.communicate(timeout=max(deadline - time.monotonic(), 1))[1]
                except subprocess.TimeoutExpired:
                    proc.kill()
                    err = proc.communicate()[1] + b"(hung: killed at the deadline)"
                if proc.returncode:
                    failed.append((proc.returncode, err))
        if failed:
            raise SystemExit(f"{path}: {len(failed)} of {sessions} sessions failed: "
                             f"{failed[0][1].decode(errors='replace')[-500:]}")
        self.reap_orphans()
        self._settle([pid for pids in servers.values() for pid in pids])
        gib = sessions * mib / 1024
        cpu = {name: (sum(map(tree_cpu, pids)) - cpu0[name]) / gib
               for name, pids in servers.items()}
        cpu["client"] = (client_cpu() - client0) / gib
        return sessions * mib / t.seconds, cpu

    # -------------------------------------------------------------- measurements

    def helper_cpu(self) -> None:
        """CPU of one ProxyCommand (user + system of it and its children, from the kernel's
        accounting of the reaped child: ``/usr/bin/time``'s source, at its full resolution
        rather than its 10 ms steps), alone (connect, read the node's banner, end of stdin)
        and inside one real ``ssh HOST true``. The line ``lmsh config`` writes, the ``lmsh
        proxy ssh`` spelling and, with ``--helper-before``, another tree's ``lmsh proxy ssh``
        alternate; ``--setup-runs`` runs each (at most 50), median and p99."""
        spellings = {"config": "helper", "lmsh": "lmsh proxy ssh"}
        if self.args.helper_before:
            spellings["before"] = "before"
        alone: dict[str, list[float]] = {s: [] for s in spellings}
        in_ssh: dict[str, list[float]] = {s: [] for s in spellings}
        for n in range(min(self.args.setup_runs, 50)):
            for spelling in spellings:
                before = client_cpu()
                done = subprocess.run([*self.proxy_command(spelling),
                                       f"{BENCH_LOGIN}@{NODE_NAME}:3022"],
                                      stdin=subprocess.DEVNULL, capture_output=True)
                alone[spelling].append((client_cpu() - before) * 1000)
                if done.returncode or not done.stdout.startswith(b"SSH-2.0-"):
                    raise SystemExit(f"the ProxyCommand ({spelling}) failed: "
                                     f"{done.stderr.decode(errors='replace')[-500:]}")
                in_ssh[spelling].append(self._helper_cpu_in_ssh(spelling, n))
        row = self.rows.setdefault("limen-pc", {})
        for spelling, key in spellings.items():
            for suffix, values in (("", alone[spelling]), (" in ssh", in_ssh[spelling])):
                row[f"{key} CPU ms{suffix}"] = _util.percentile(values, 50)
                row[f"{key} CPU ms{suffix} p99"] = _util.percentile(values, 99)

    def _helper_cpu_in_ssh(self, spelling: str, n: int) -> float:
        """CPU of the ProxyCommand inside one real ``ssh HOST true``: OpenSSH runs
        :data:`RUSAGE_WRAPPER`, which runs the ProxyCommand as its child (OpenSSH's SIGHUP
        at the end reaches it as usual) and writes the child's rusage when it ends."""
        wrapper = self.dir / "rusage_wrapper.py"
        if not wrapper.exists():
            wrapper.write_text(RUSAGE_WRAPPER)
        out = self.dir / f"helper-cpu-{spelling}-{n}.txt"
        command = " ".join([sys.executable, "-S", str(wrapper), str(out),
                            *map(shlex.quote, self.proxy_command(spelling)), "%r@%h:%p"])
        subprocess.run([SSH, "-F", str(self.config), "-o", f"ProxyCommand {command}",
                        "-p", "3022", NODE_NAME, "true"], check=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not out.exists():
            if time.monotonic() > deadline:
                raise SystemExit("the ProxyCommand did not end within 10 s of ssh")
            time.sleep(0.005)
        self.reap_orphans()
        return float(out.read_text())

    def transfer(self, paths: list[str], kind: str) -> None:
        """``kind`` single (one session of ``--size-mib``) or parallel (``--parallel``
        sessions of ``--parallel-mib``): ``--repeat`` rounds interleaved over the paths."""
        sessions, mib = ((1, self.args.size_mib) if kind == "single"
                         else (self.args.parallel, self.args.parallel_mib))
        for _ in range(self.args.repeat):
            for path in paths:
                rate, cpu = self.batch(path, sessions, mib)
                row = self.rows.setdefault(path, {})
                row.setdefault(f"{kind} MiB/s", []).append(rate)
                for name, value in cpu.items():
                    row.setdefault(f"{kind} {name} CPU-s/GiB", []).append(value)
                print(f"  {kind:<8} {path:<9} {rate:7.1f} MiB/s  " + "  ".join(
                    f"{n} {v:.2f}" for n, v in cpu.items()) + " CPU-s/GiB", flush=True)

    def setup(self, paths: list[str]) -> None:
        """``--setup-runs`` sequential ``ssh HOST true`` per path, the paths interleaved;
        wall time and the client's CPU per connection."""
        times: dict[str, list[float]] = {p: [] for p in paths}
        cpu: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(self.args.setup_runs):
            for path in paths:
                client0 = client_cpu()
                with _util.timed() as t:
                    subprocess.run(self.ssh_cmd(path, "true"), check=True,
                                   stdin=subprocess.DEVNULL)
                times[path].append(t.seconds * 1000)
                self.reap_orphans()
                cpu[path].append((client_cpu() - client0) * 1000)
        for path in paths:
            row = self.rows.setdefault(path, {})
            row["setup p50 ms"] = _util.percentile(times[path], 50)
            row["setup p99 ms"] = _util.percentile(times[path], 99)
            row["client CPU ms/conn"] = _util.percentile(cpu[path], 50)

    def idle(self, path: str) -> None:
        n = self.args.idle
        if path in ("limen-pc", "lmsh"):
            return  # idle sessions are measured on the -J path (asyncssh clients)
        if path == "limen":
            before = {"proxy": rss_kib(self.proxy.pid), "agent": rss_kib(self.agent.pid)}
        else:
            before_pss = self._idle_mem(path)["sshd"]
        held = asyncio.run(self._hold_idle(path, n, measure=lambda: self._idle_mem(path)))
        row = self.rows.setdefault(path, {})
        if path == "limen":
            row["idle kB/session proxy"] = (held["proxy"] - before["proxy"]) / n
            row["idle kB/session agent"] = (held["agent"] - before["agent"]) / n
            row["proxy RSS MiB"] = held["proxy"] / 1024
            row["agent RSS MiB"] = held["agent"] / 1024
        else:
            row["idle kB/session sshd (PSS)"] = (held["sshd"] - before_pss) / n

    def _idle_mem(self, path: str) -> dict[str, int]:
        if path == "limen":
            return {"proxy": rss_kib(self.proxy.pid), "agent": rss_kib(self.agent.pid)}
        return {"sshd": sum(pss_kib(p) for master in (self.sshd.pid, self.bastion.pid)
                            for p in descendants(master))}

    async def _hold_idle(self, path: str, n: int, measure: Any) -> dict[str, int]:
        import asyncssh

        key = asyncssh.read_private_key(str(self.dir / "id"))
        cert = asyncssh.read_certificate(str(self.dir / "id-cert.pub"))
        common = {"username": BENCH_LOGIN, "client_keys": [(key, cert)], "agent_path": None,
                  "known_hosts": str(self.dir / "known_hosts"), "config": None,
                  "encryption_algs": [CIPHER], "kex_algs": [KEX]}
        proxy_host, proxy_port = self.listeners["ssh_proxy"].rsplit(":", 1)
        conns: list[Any] = []
        procs: list[Any] = []
        gate = asyncio.Semaphore(20)

        async def one() -> None:
            async with gate:
                if path == "direct":
                    inner = await asyncssh.connect("127.0.0.1", self.sshd_port,
                                                   host_key_alias="sshd-ref", **common)
                elif path == "sshd-jump":
                    jump = await asyncssh.connect("127.0.0.1", self.bastion_port,
                                                  host_key_alias="sshd-bastion", **common)
                    conns.append(jump)
                    inner = await asyncssh.connect("127.0.0.1", self.sshd_port, tunnel=jump,
                                                   host_key_alias="sshd-ref", **common)
                else:
                    jump = await asyncssh.connect(proxy_host, int(proxy_port), **common)
                    conns.append(jump)
                    inner = await asyncssh.connect(NODE_NAME, 22, tunnel=jump, **common)
                conns.append(inner)
                procs.append(await inner.create_process("cat", encoding=None))

        await asyncio.gather(*(one() for _ in range(n)))
        await asyncio.sleep(2)  # let the servers settle (allocations, buffers) before reading
        held: dict[str, int] = measure()
        for proc in procs:
            proc.stdin.write_eof()
        for conn in reversed(conns):
            conn.close()
        await asyncio.gather(*(c.wait_closed() for c in conns), return_exceptions=True)
        return held


# ====================================================================== report


def _ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value and reference else None


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def report(bench: Bench, facts: dict[str, str], kex: dict[str, str], login: str) -> str:
    rows, args = bench.rows, bench.args
    med = {path: {key: statistics.median(v) for key, v in row.items()
                  if isinstance(v, list) and v} for path, row in rows.items()}

    def get(path: str, key: str) -> float | None:
        value = med.get(path, {}).get(key, rows.get(path, {}).get(key))
        return value if isinstance(value, float | int) else None

    def cpu(path: str, kind: str) -> str:
        return " / ".join(_fmt(get(path, f"{kind} {name} CPU-s/GiB"), ".2f")
                          for name in ("proxy", "node", "client"))

    lines = [f"### {time.strftime('%Y-%m-%d %H:%M')} — every path, single and "
             f"{args.parallel} parallel (issue #20)", ""]
    lines.append("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    lines.append("")
    lines.append("command: `" + " ".join([".venv/bin/python bench/bench_ssh.py",
                                           *sys.argv[1:]]) + "`")
    lines.append("")
    lines.append(f"- node behind the tunnel: {bench.node_label}; login: {login}")
    lines.append(f"- every OpenSSH client forced to `-o KexAlgorithms={KEX}` and `Ciphers "
                 f"{CIPHER}` (OpenSSH's sshd would pick sntrup761x25519, which the Limen "
                 "proxy and node lack); negotiated: "
                 + "; ".join(f"{p} {k}" for p, k in kex.items()))
    lines.append(f"- single: one session of {args.size_mib} MiB; parallel: {args.parallel} "
                 f"concurrent sessions of {args.parallel_mib} MiB (aggregate MiB/s); "
                 f"{args.repeat} rounds interleaved over the paths, median [rounds]; setup: "
                 f"{args.setup_runs} sequential `ssh HOST true` per path, interleaved")
    lines.append("- CPU-s/GiB: proxy = the Limen proxy process (with its auth) or the bastion "
                 "sshd; node = the node agent or the target sshd, each with the session "
                 "commands they reaped (an sshd runs under a subreaper that collects the session "
                 "processes it orphans); client = OpenSSH with its ProxyCommand / `-W` helper "
                 "and `lmsh` (rusage of reaped children). Every figure includes the sessions' "
                 "connection setup (small sizes are dominated by it)")
    lines.append("")
    heads = ["path", "MiB/s single [rounds]", "x bastion", f"MiB/s {args.parallel} parallel "
             "[rounds]", "x bastion", "setup p50 ms", "setup p99 ms", "x `-J` setup",
             "client CPU ms/conn", "CPU-s/GiB single proxy / node / client",
             "CPU-s/GiB parallel proxy / node / client"]
    lines.append("| " + " | ".join(heads) + " |")
    lines.append("|---|" + "---:|" * (len(heads) - 1))
    for path in PATHS:
        if path not in rows:
            continue
        row = rows[path]
        lines.append("| " + " | ".join([
            path,
            _median_range(row.get("single MiB/s", [])),
            _fmt(_ratio(get(path, "single MiB/s"), get("sshd-jump", "single MiB/s")), ".2f"),
            _median_range(row.get("parallel MiB/s", [])),
            _fmt(_ratio(get(path, "parallel MiB/s"), get("sshd-jump", "parallel MiB/s")),
                 ".2f"),
            _fmt(get(path, "setup p50 ms")), _fmt(get(path, "setup p99 ms")),
            _fmt(_ratio(get(path, "setup p50 ms"), get("limen", "setup p50 ms")), ".2f")
            if path in ("limen-pc", "lmsh") else "",
            _fmt(get(path, "client CPU ms/conn")),
            cpu(path, "single"), cpu(path, "parallel")]) + " |")
    lines.append("")
    lines.append("Targets (issue #20):")
    lines.append("")

    def target(name: str, value: float | None, limit: float, above: bool) -> None:
        if value is None:
            return
        met = value >= limit if above else value <= limit
        lines.append(f"- {name}: {value:.3f} ({'≥' if above else '≤'} {limit}) "
                     f"{'met' if met else '**NOT met**'}")

    for path in LIMEN_PATHS:
        for kind in ("single", "parallel"):
            target(f"{path} {kind} / sshd bastion", _ratio(get(path, f"{kind} MiB/s"),
                   get("sshd-jump", f"{kind} MiB/s")), 1.0, above=True)
            target(f"{path} {kind} / direct (stretch)", _ratio(
                get(path, f"{kind} MiB/s"), get("direct", f"{kind} MiB/s")), 0.5, above=True)
    target("lmsh ssh setup p50 / ssh -J via Limen", _ratio(get("lmsh", "setup p50 ms"),
           get("limen", "setup p50 ms")), 1.5, above=False)
    target("limen-pc (lmsh config) setup p50 / ssh -J via Limen", _ratio(
        get("limen-pc", "setup p50 ms"), get("limen", "setup p50 ms")), 1.5, above=False)
    pc = rows.get("limen-pc", {})
    if "helper CPU ms" in pc:
        def cpu_line(key: str, what: str, target: bool) -> None:
            met = pc[f"{key} CPU ms"] <= 50
            lines.append(
                f"- {what}: CPU per connection (rusage of the reaped process) alone p50 "
                f"{pc[f'{key} CPU ms']:.1f} ms, p99 {pc[f'{key} CPU ms p99']:.1f} ms; inside "
                f"one real `ssh HOST true` p50 {pc[f'{key} CPU ms in ssh']:.1f} ms, p99 "
                f"{pc[f'{key} CPU ms in ssh p99']:.1f} ms"
                + ((" (≤ 50) " + ("met" if met and pc[f"{key} CPU ms in ssh"] <= 50
                                  else "**NOT met**")) if target else ""))

        cpu_line("helper", "the `lmsh config` ProxyCommand (`python -I -S .../proxyssh_main.py`)",
                 True)
        cpu_line("lmsh proxy ssh", "the `lmsh proxy ssh` spelling (blocks written before)",
                 False)
        if "before CPU ms" in pc:
            cpu_line("before", f"`lmsh proxy ssh` of `--helper-before "
                               f"{args.helper_before}`, interleaved with the two above", False)
    lim = rows.get("limen", {})
    idle = [f"{p} {rows[p]['idle kB/session sshd (PSS)']:.0f} kB (sshd PSS)"
            for p in ("direct", "sshd-jump") if "idle kB/session sshd (PSS)" in rows.get(p, {})]
    if "idle kB/session proxy" in lim:
        idle.append(f"limen proxy {lim['idle kB/session proxy']:.0f} + agent "
                    f"{lim['idle kB/session agent']:.0f} kB (RSS; proxy RSS "
                    f"{lim['proxy RSS MiB']:.0f} MiB, agent {lim['agent RSS MiB']:.0f} MiB)")
    if idle:
        lines += ["", f"Idle: {args.idle} sessions, per session: " + "; ".join(idle)]
    return "\n".join(lines) + "\n"


def record(text: str) -> None:
    """Add ``text`` at the end of the "## SSH" section of RESULTS.md (earlier entries stay),
    re-reading the file right before."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head, sep, rest = current.partition("\n## SSH\n")
    if not sep:
        RESULTS.write_text(current.rstrip("\n") + "\n\n## SSH\n\n`bench/bench_ssh.py`.\n\n"
                           + text)
        return
    following = rest.find("\n## ")
    section, tail = (rest[:following], rest[following:]) if following >= 0 else (rest, "")
    RESULTS.write_text(head + sep + section.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
                       + tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024,
                        help="MiB of the single-session throughput run")
    parser.add_argument("--parallel", type=int, default=20,
                        help="concurrent sessions of the parallel throughput run")
    parser.add_argument("--parallel-mib", type=int, default=50,
                        help="MiB per session of the parallel run")
    parser.add_argument("--repeat", type=int, default=3,
                        help="throughput rounds (interleaved over the paths; median)")
    parser.add_argument("--setup-runs", type=int, default=200)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--skip", default="",
                        help="comma list of single,parallel,setup,idle,client")
    parser.add_argument("--node", choices=["real", "standin"], default="real",
                        help="what serves SSH behind the tunnel (default: the node agent)")
    parser.add_argument("--asyncssh-recv", choices=["limen", "stock"], default="limen",
                        help="asyncssh's receive path in the proxy and agent: Limen's "
                             "adaptation (limen.net.asyncssh_recv) or asyncssh's own")
    parser.add_argument("--helper-before", type=Path,
                        help="the src directory of another tree (git archive REV src): its "
                             "lmsh proxy ssh is measured in the client part, interleaved")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--serve-proxy", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-agent", type=Path, help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--reap"]:
        return serve_reaper(sys.argv[2:])
    args = parser.parse_args()
    if args.serve_proxy:
        return serve_proxy(args.serve_proxy)
    if args.serve_agent:
        return serve_agent(args.serve_agent)
    paths = args.paths.split(",")
    unknown = set(paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown paths {sorted(unknown)}; known: {', '.join(PATHS)}")
    skip = set(filter(None, args.skip.split(",")))
    login = ensure_login()
    become_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    facts = _util.machine_facts()
    facts["openssh"] = subprocess.run([SSH, "-V"], capture_output=True, text=True,
                                      check=True).stderr.split(",")[0].strip()
    _util.print_machine(facts)
    bench = Bench(args)
    with bench.running():
        print(f"node behind the tunnel: {bench.node_label}; login {login}", flush=True)
        kex = bench.kex_used()
        print("key exchange (forced: -o KexAlgorithms=" + KEX + "): "
              + "; ".join(f"{p} {k}" for p, k in kex.items()), flush=True)
        for part in ("single", "parallel", "setup", "idle", "client"):
            if part in skip or (part == "client" and "limen-pc" not in paths):
                continue
            print(f"{part}:", flush=True)
            if part in ("single", "parallel"):
                bench.transfer(paths, part)
            elif part == "setup":
                bench.setup(paths)
            elif part == "idle":
                for path in paths:
                    bench.idle(path)
            else:
                bench.helper_cpu()
            for path in paths if part in ("setup", "idle", "client") else ():
                row = {k: v for k, v in bench.rows.get(path, {}).items()
                       if not k.startswith(("single", "parallel"))}
                print(f"{part:<10} {path:<9} {json.dumps(row)}", flush=True)
    text = report(bench, facts, kex, login)
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
