"""SSH through Limen's proxy and reverse tunnel, next to OpenSSH references (not a test).

Three paths, measured in the same run on loopback, all with aes128-gcm@openssh.com and the
real OpenSSH client (the idle-session part uses asyncssh clients, see below):

* ``direct``   OpenSSH -> stock sshd
* ``sshd-jump`` OpenSSH -> stock sshd as jump host (``ssh -J``) -> stock sshd
* ``limen``    OpenSSH -> Limen proxy SSH front (``ssh -J``) -> reverse tunnel -> node SSH
               server (the node agent's ``NodeSSHServer`` when it is available, else a
               stand-in asyncssh server; the output says which)
* ``limen-pc`` OpenSSH with the ``lmsh config`` ProxyCommand (``lmsh proxy ssh``: one TLS
               connection to the proxy's web port, ALPN ``limen-ssh-proxy``) -> reverse tunnel
               -> the same node server; plus the ProxyCommand's own CPU per connection
               (``/usr/bin/time`` of ``lmsh proxy ssh`` reading the node's banner)

The proxy (with its auth server) and the agent (TunnelAgent + node server) run as two separate
Python processes, as they would on two machines. Measurements:

1. throughput: ``head -c SIZE /dev/zero | ssh HOST 'cat > /dev/null'`` (wall time, MiB/s, and
   CPU seconds per GiB of the proxy and agent processes), ``--repeat`` rounds interleaved over
   the paths, median (the machine may be shared: its load drifts during a run);
2. connection setup: N sequential ``ssh HOST true`` per path, interleaved, p50/p99;
3. idle sessions: M concurrent sessions (asyncssh clients, each its own jump connection and
   inner connection running an idle ``cat``); memory per session from ``/proc`` (VmRSS of
   the proxy and agent processes; PSS of the sshd processes for the references).

Usage: ``python bench/bench_ssh.py [--size-mib 1024] [--setup-runs 200] [--idle 1000]``;
``--record`` appends/replaces the "## SSH" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
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
BENCH_ROLE = {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "bench"},
              "spec": {"allow": {"logins": ["root"], "node_labels": {"*": "*"}}}}


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
    identity = Identity(username="bench", cluster="bench", roles=("bench",), logins=("root",))
    (directory / "id-cert.pub").write_bytes(
        sign_user_cert(user_ca, ukey.public_key(), identity, timedelta(hours=4)) + b"\n")
    (directory / "known_hosts").write_text(
        "".join(f"@cert-authority * {k}\n" for k in host_ca.ssh_public_keys()))
    tls_ca = auth.server.authorities.get(CertAuthorityType.TLS)
    tls_cert = sign_client_cert(tls_ca, ukey.public_key(), identity, timedelta(hours=4))
    ProfileStore(directory / "limen-home").save_login(  # what lmsh login leaves for lmsh
        Profile(proxy=listeners["web"], user="bench", cluster="bench",
                expires=tls_cert.not_valid_after_utc.isoformat(), roles=("bench",),
                logins=("root",), ssh_proxy=listeners["ssh_proxy"]),
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
        host_ca, skey.public_key(), "sshd-ref", "sshd-ref", ["127.0.0.1"],
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


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="limen-bench-ssh-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.rows: dict[str, dict[str, Any]] = {}

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
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.sshd_port = probe.getsockname()[1]
        (self.dir / "sshd_config").write_text(f"""
Port {self.sshd_port}
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
PermitRootLogin prohibit-password
MaxStartups 200:30:400
MaxSessions 10
Ciphers {CIPHER}
""")
        os.makedirs("/run/sshd", exist_ok=True)
        self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                     stdout=subprocess.DEVNULL,
                                     stderr=(self.dir / "sshd.log").open("wb"))
        self.procs.append(self.sshd)
        proxy_host, proxy_port = self.listeners["ssh_proxy"].rsplit(":", 1)
        self.config = self.dir / "ssh_config"
        self.config.write_text(f"""
Host *
    User root
    IdentityFile {self.dir}/id
    CertificateFile {self.dir}/id-cert.pub
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile {self.dir}/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
    Ciphers {CIPHER}
    ControlMaster no
    ControlPath none
Host sshd-ref
    HostName 127.0.0.1
    Port {self.sshd_port}
Host proxy
    HostName {proxy_host}
    Port {proxy_port}
""")
        deadline = time.monotonic() + 30
        while subprocess.run(self.ssh_cmd("direct", "true"), capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise SystemExit(f"sshd did not come up; see {self.dir}/sshd.log")
            time.sleep(0.1)

    def ssh_cmd(self, path: str, command: str) -> list[str]:
        base = [SSH, "-F", str(self.config)]
        if path == "direct":
            return [*base, "sshd-ref", command]
        if path == "sshd-jump":
            return [*base, "-J", "sshd-ref", "sshd-ref", command]
        if path == "limen-pc":
            return [*base, "-o", f"ProxyCommand {' '.join(self.proxy_command())} %r@%h:%p",
                    "-p", "3022", NODE_NAME, command]
        return [*base, "-J", "proxy", NODE_NAME, command]

    def proxy_command(self) -> list[str]:
        """``lmsh proxy ssh`` as the ``lmsh config`` block runs it (the user's LIMEN_HOME)."""
        lmsh = Path(sys.executable).with_name("lmsh")
        return ["env", f"LIMEN_HOME={self.dir / 'limen-home'}", str(lmsh), "proxy", "ssh",
                "--proxy", self.listeners["web"], "--cluster", "bench"]

    # -------------------------------------------------------------- measurements

    def client_cpu(self) -> None:
        """CPU of one ``lmsh proxy ssh`` (user + system, ``/usr/bin/time``): connect, read
        the node's banner, end of stdin; ``--setup-runs`` runs (at most 50), median."""
        used: list[float] = []
        for _ in range(min(self.args.setup_runs, 50)):
            done = subprocess.run(["/usr/bin/time", "-f", "%U %S", *self.proxy_command(),
                                   f"root@{NODE_NAME}:3022"], stdin=subprocess.DEVNULL,
                                  capture_output=True, check=True)
            user, system = done.stderr.decode().split()[-2:]
            used.append((float(user) + float(system)) * 1000)
        row = self.rows.setdefault("limen-pc", {})
        row["client CPU ms"] = _util.percentile(used, 50)
        row["client CPU ms p99"] = _util.percentile(used, 99)

    def throughput(self, paths: list[str]) -> None:
        """``--repeat`` rounds over the paths, interleaved (a shared machine's load drifts);
        the median round counts."""
        size = self.args.size_mib << 20
        runs: dict[str, list[float]] = {p: [] for p in paths}
        cpu: dict[str, list[float]] = {f"{w} {p}": [] for w in ("proxy", "agent")
                                       for p in paths}
        for _ in range(self.args.repeat):
            for path in paths:
                cmd = " ".join(shlex.quote(a) for a in self.ssh_cmd(path, "cat > /dev/null"))
                cpu0 = {p.pid: _util.process_cpu(p.pid) for p in (self.proxy, self.agent)}
                with _util.timed() as t:
                    subprocess.run(["bash", "-c", f"head -c {size} /dev/zero | {cmd}"],
                                   check=True)
                runs[path].append(self.args.size_mib / t.seconds)
                if path.startswith("limen"):
                    for name, proc in (("proxy", self.proxy), ("agent", self.agent)):
                        used = _util.process_cpu(proc.pid) - cpu0[proc.pid]
                        cpu[f"{name} {path}"].append(used / (size / (1 << 30)))
        for path in paths:
            row = self.rows.setdefault(path, {})
            row["MiB/s"] = _util.percentile(runs[path], 50)
            row["MiB/s runs"] = [round(v) for v in runs[path]]
            if path.startswith("limen"):
                row["proxy CPU-s/GiB"] = _util.percentile(cpu[f"proxy {path}"], 50)
                row["agent CPU-s/GiB"] = _util.percentile(cpu[f"agent {path}"], 50)

    def setup(self, paths: list[str]) -> None:
        """``--setup-runs`` sequential connections per path, the paths interleaved."""
        times: dict[str, list[float]] = {p: [] for p in paths}
        for _ in range(self.args.setup_runs):
            for path in paths:
                with _util.timed() as t:
                    subprocess.run(self.ssh_cmd(path, "true"), check=True,
                                   stdin=subprocess.DEVNULL)
                times[path].append(t.seconds * 1000)
        for path in paths:
            row = self.rows.setdefault(path, {})
            row["setup p50 ms"] = _util.percentile(times[path], 50)
            row["setup p99 ms"] = _util.percentile(times[path], 99)

    def idle(self, path: str) -> None:
        n = self.args.idle
        if path == "limen-pc":
            return  # idle sessions are measured on the -J path (asyncssh clients)
        if path == "limen":
            before = {"proxy": rss_kib(self.proxy.pid), "agent": rss_kib(self.agent.pid)}
        else:
            before_pss = sum(pss_kib(p) for p in descendants(self.sshd.pid))
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
        return {"sshd": sum(pss_kib(p) for p in descendants(self.sshd.pid))}

    async def _hold_idle(self, path: str, n: int, measure: Any) -> dict[str, int]:
        import asyncssh

        key = asyncssh.read_private_key(str(self.dir / "id"))
        cert = asyncssh.read_certificate(str(self.dir / "id-cert.pub"))
        common = {"username": "root", "client_keys": [(key, cert)], "agent_path": None,
                  "known_hosts": str(self.dir / "known_hosts"), "config": None,
                  "encryption_algs": [CIPHER]}
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
                    jump = await asyncssh.connect("127.0.0.1", self.sshd_port,
                                                  host_key_alias="sshd-ref", **common)
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


def report(bench: Bench, facts: dict[str, str]) -> str:
    rows = bench.rows
    lines = [f"### {time.strftime('%Y-%m-%d %H:%M')} — node: {bench.node_label}", ""]
    lines.append("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    lines.append("")
    lines.append("command: `" + " ".join([".venv/bin/python bench/bench_ssh.py",
                                           *sys.argv[1:]]) + "`")
    lines.append("")
    heads = ["path", "MiB/s (median, [rounds])", "setup p50 ms", "setup p99 ms",
             "idle kB/session", "proxy CPU-s/GiB"]
    lines.append("| " + " | ".join(heads) + " |")
    lines.append("|" + "---|" * len(heads))
    for path in ("direct", "sshd-jump", "limen", "limen-pc"):
        row = rows.get(path, {})
        idle = (f"proxy {row['idle kB/session proxy']:.0f} + agent "
                f"{row['idle kB/session agent']:.0f} (RSS)"
                if "idle kB/session proxy" in row else
                f"{row['idle kB/session sshd (PSS)']:.0f} (sshd PSS)"
                if "idle kB/session sshd (PSS)" in row else "-")
        lines.append(f"| {path} | {row.get('MiB/s', float('nan')):.0f} "
                     f"{row.get('MiB/s runs', '')} | "
                     f"{row.get('setup p50 ms', float('nan')):.1f} | "
                     f"{row.get('setup p99 ms', float('nan')):.1f} | {idle} | "
                     f"{row.get('proxy CPU-s/GiB', float('nan')):.2f} |")
    lim, jump, direct = rows.get("limen", {}), rows.get("sshd-jump", {}), rows.get("direct", {})
    lines.append("")
    if "MiB/s" in lim and "MiB/s" in jump:
        lines.append(f"- throughput: limen / sshd-jump = {lim['MiB/s'] / jump['MiB/s']:.2f} "
                     f"(target >= 1), limen / direct = {lim['MiB/s'] / direct['MiB/s']:.2f} "
                     f"(stretch >= 0.5); proxy {lim.get('proxy CPU-s/GiB', 0):.2f} CPU-s/GiB, "
                     f"agent {lim.get('agent CPU-s/GiB', 0):.2f} CPU-s/GiB")
    if "setup p50 ms" in lim and "setup p50 ms" in direct:
        lines.append(f"- setup: limen / direct p50 = "
                     f"{lim['setup p50 ms'] / direct['setup p50 ms']:.2f} (target <= 3)")
    pc = rows.get("limen-pc", {})
    if "setup p50 ms" in pc and "setup p50 ms" in lim:
        lines.append(f"- ProxyCommand (limen-pc) / -J (limen) setup p50 = "
                     f"{pc['setup p50 ms'] / lim['setup p50 ms']:.2f} (target <= 1.5)")
    if "client CPU ms" in pc:
        lines.append(f"- lmsh proxy ssh client CPU per connection: p50 "
                     f"{pc['client CPU ms']:.0f} ms, p99 {pc['client CPU ms p99']:.0f} ms "
                     "(target <= 50)")
    if "proxy RSS MiB" in lim:
        lines.append(f"- with {bench.args.idle} idle sessions: proxy RSS "
                     f"{lim['proxy RSS MiB']:.0f} MiB, agent RSS {lim['agent RSS MiB']:.0f} MiB")
    return "\n".join(lines) + "\n"


METHOD_NOTES = """
Method: throughput rounds and setup runs are interleaved over the three paths (a shared
machine's load drifts), the median round is reported; only ratios within one run compare.
Limen's path: OpenSSH `-J` to the proxy's SSH front (the proxy decrypts only the jump layer),
a raw relay into the tunnel's data connection, the node's SSH server in a second process.
Idle sessions: asyncssh clients, each with its own jump and inner connection running an idle
`cat`; Limen counts VmRSS growth of the proxy and agent, the references PSS growth of all sshd
processes (the `cat` children are counted in neither).
"""


def record(text: str) -> None:
    """Replace (or append) the "## SSH" section of RESULTS.md, re-reading it right before."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head, sep, rest = current.partition("\n## SSH\n")
    if sep:
        following = rest.find("\n## ")
        tail = rest[following:] if following >= 0 else "\n"
    else:
        head, tail = current.rstrip("\n") + "\n", "\n"
    section = ("\n## SSH\n\nOpenSSH client through Limen's proxy SSH front and reverse tunnel, "
               "against OpenSSH to sshd directly and through an sshd jump host "
               "(`bench/bench_ssh.py`).\n\n" + text + METHOD_NOTES)
    RESULTS.write_text(head.rstrip("\n") + "\n" + section.rstrip("\n") + "\n" + tail.lstrip("\n")
                       if tail.strip() else head.rstrip("\n") + "\n" + section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3,
                        help="throughput rounds (interleaved over the paths; median)")
    parser.add_argument("--setup-runs", type=int, default=200)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--paths", default="direct,sshd-jump,limen")
    parser.add_argument("--skip", default="",
                        help="comma list of throughput,setup,idle,client")
    parser.add_argument("--node", choices=["real", "standin"], default="real",
                        help="what serves SSH behind the tunnel (default: the node agent)")
    parser.add_argument("--asyncssh-recv", choices=["limen", "stock"], default="limen",
                        help="asyncssh's receive path in the proxy and agent: Limen's "
                             "adaptation (limen.net.asyncssh_recv) or asyncssh's own")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--serve-proxy", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-agent", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        return serve_proxy(args.serve_proxy)
    if args.serve_agent:
        return serve_agent(args.serve_agent)
    facts = _util.machine_facts()
    _util.print_machine(facts)
    bench = Bench(args)
    skip = set(filter(None, args.skip.split(",")))
    paths = args.paths.split(",")
    with bench.running():
        print(f"node behind the tunnel: {bench.node_label}")
        for part in ("throughput", "setup", "idle", "client"):
            if part in skip or (part == "client" and "limen-pc" not in paths):
                continue
            if part == "client":
                bench.client_cpu()
            elif part == "idle":
                for path in paths:
                    bench.idle(path)
            else:
                getattr(bench, part)(paths)
            for path in paths:
                print(f"{part:<10} {path:<9} {json.dumps(bench.rows.get(path, {}))}",
                      flush=True)
    text = report(bench, facts)
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
