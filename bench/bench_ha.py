"""High availability and scale-out (issue #17): logins/s and SSH sessions/s with 1 and 2 auth
replicas on one PostgreSQL, and idle agents held by one proxy (not a test: run by hand,
``python bench/bench_ha.py``; see bench/README.md).

Every Limen part is a separate ``limen start`` process (``tests/integration/cluster.py``) on
one PostgreSQL 15 started in a temporary directory (``tests/dbservers.py``; its fixture turns
fsync off, this bench turns fsync, synchronous_commit and full_page_writes back on), each
configuration in a fresh database:

1. ``--part logins,ssh`` for each of ``--replicas 1,2``::

       login clients ─HTTPS─▶ proxy ─mTLS─▶ TCP balancer ─┬─▶ auth 0 ─┐
       ssh -J proxy node true ─▶ proxy ─tunnel─▶ node     └─▶ auth 1 ─┴─ PostgreSQL

   the proxy and the node agent reach auth through a TCP balancer (``tcp_failover``, run in
   its own process so that its CPU is counted apart), with one replica behind it too, so the
   second replica is the only difference. Auth runs with ``--insecure-second-factor-off``
   (no TOTP step limits the login rate; a login still verifies an Argon2id password).

   * logins: ``--concurrency`` clients (one HTTPS connection each, ``limen.client.webapi``,
     as ``bench_signing.py``), each its own user, POST ``/v1/webapi/login`` with a fresh key
     for ``--seconds``: logins/s, latency p50/p99;
   * SSH sessions: ``--sessions`` runs of stock OpenSSH ``ssh -J proxy bench-node true``,
     ``--ssh-concurrency`` at a time, with the certificate of one login, next to ``ssh
     sshd-ref true`` straight to a throwaway sshd trusting Limen's user CA (the direct path)
     in the same run: sessions/s, latency p50/p99;

   with the CPU seconds of each process (every auth replica, proxy, node agent and its
   session processes, the balancer, PostgreSQL, the clients) per operation.

2. ``--part agents``: one auth (PostgreSQL) and one ``limen start --roles proxy``; worker
   processes of this script (``--workers``, ``--agent-worker``) each run many agents, every
   one a node agent's own parts: a join with a (reusable) node token through the proxy's
   ``/v1/webapi/join`` (its own key and host certificate), a
   :class:`~limen.tunnel.agent_pool.TunnelAgentPool` (SSH control connection, hello and
   welcome checked, heartbeats of its node Resource every 10 s, which the proxy relays to
   auth presence) and, at ``poll:N`` stages, the trust a node follows
   (:class:`~limen.trust.roots_poller.RemoteTrustCache` through :class:`AuthLink`: auth's
   answer pushed, signed, by the proxy over the tunnel, ``GET /v1/trust/roots`` every 3 s
   over a TLS connection to auth spliced by the proxy only while no push arrives; with
   ``--no-trust-push`` the agents do not ask for pushes and poll, as before issue #17). Every
   host joins first; then ``--stages`` runs in order: ``agents:N`` starts tunnels up to N
   agents, ``poll:N`` turns the trust poll on for the first N. After each stage the agents stay
   idle ``--idle`` seconds: the proxy's RSS (kB per agent over its RSS before any agent),
   file descriptors, CPU of proxy, auth, PostgreSQL and the workers while idle, live
   presence records, time to join and connect.

The soft limit of open files is raised to the hard limit in this process (inherited by every
process it starts). ``--record`` appends the run to the "## High availability and scale-out"
section of bench/RESULTS.md.

Usage: ``python bench/bench_ha.py [--part logins,ssh,agents] [--replicas 1,2] [--seconds 15]
[--concurrency 8] [--rounds 2] [--sessions 80] [--ssh-concurrency 8]
[--stages agents:1000,agents:2000,agents:3000,agents:4000,agents:5000,poll:1000] [--idle 20]
[--workers 4] [--record]``; about ten minutes on a quiet two-core machine, up to 17 on a
loaded one. Agents are added 1,000 at a time by default: 4,000 dialling one proxy at once
did not converge on a loaded two-core machine (see bench/RESULTS.md); ``--stages`` goes
further (``...,agents:10000``). A stage that leaves fewer than 90% of the agents connected
ends the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _util
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the test helpers: real servers and clusters

from bench_db import tree_cpu  # noqa: E402

from dbservers import PostgresServer, start_postgres  # noqa: E402
from integration.cluster import LimenCluster  # noqa: E402
from integration.tcp_failover import TcpFailover  # noqa: E402
from ports import free_port  # noqa: E402

RESULTS = HERE / "RESULTS.md"
SECTION = "## High availability and scale-out"
SSH, SSHD, SSH_KEYGEN = "/usr/bin/ssh", "/usr/sbin/sshd", "/usr/bin/ssh-keygen"
CLUSTER, NODE, LOGIN, DB_ROLE = "bench", "bench-node", "root", "limen_bench"
PASSWORD = "bench-password-0123456789"
CIPHER = "aes128-gcm@openssh.com"
ROLE = f"""\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: bench}}
spec:
  allow:
    logins: [{LOGIN}]
    node_labels: {{'*': '*'}}
"""
PER_WORKER_MAX = 2600
"""Agents per worker process: each holds ~5 descriptors per agent (control and data
connections, the auth route's listener and its two ends) under a 20,000 limit."""
CONNECT_DEADLINE = 300.0
POLL_DEADLINE = 120.0


# ====================================================================== small helpers


def raise_nofile() -> tuple[int, int]:
    """Soft limit of open files := hard limit; returns the new (soft, hard)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard, hard


def private(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return -1


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)  # polling another process's state, bounded by the deadline


def loadavg() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def postmaster(pg: PostgresServer) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


def fresh_database(pg: PostgresServer, name: str) -> str:
    pg.create_user(DB_ROLE)
    pg.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    pg.sql(f"CREATE DATABASE {name} OWNER {DB_ROLE}")
    return f"host={pg.root} port={pg.port} user={DB_ROLE} dbname={name}"


def durable(pg: PostgresServer) -> None:
    """PostgreSQL as a team runs it: the test fixture's fsync=off etc. turned back on."""
    for setting in ("fsync", "synchronous_commit", "full_page_writes"):
        pg.sql(f"ALTER SYSTEM SET {setting} = on")
    pg.sql("SELECT pg_reload_conf()")


# ====================================================================== a cluster of processes


class Deployment:
    """auth replica(s) on PostgreSQL, optionally a TCP balancer process in front of them, one
    proxy and optionally one node agent; each a ``limen start`` process."""

    def __init__(self, root: Path, pg: PostgresServer, database: str, replicas: int,
                 balancer: bool, node: bool) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.pg = pg
        proxy_token = secrets.token_hex(24)
        self.config = root / "limen.yaml"
        self.config.write_text(yaml.safe_dump({
            "backend": {"type": "postgres",
                        "dsn_file": str(private(root / "backend.dsn",
                                                fresh_database(pg, database))),
                        "ca_key_file": str(private(root / "ca.key", secrets.token_hex(32)))},
            "auth": {"proxy_token_file": str(private(root / "proxy-token", proxy_token))},
        }))
        self.proxy_token = proxy_token
        self.auths = [LimenCluster(root / f"auth-{i}", CLUSTER, [
            "--roles", "auth", "-c", str(self.config), "--insecure-second-factor-off"])
            for i in range(replicas)]
        self.want_balancer, self.want_node = balancer, node
        self.balancer: subprocess.Popen[bytes] | None = None
        self.balancer_address = ""
        self.proxy: LimenCluster | None = None
        self.node: LimenCluster | None = None
        self.pin = ""

    def start(self) -> Deployment:
        for auth in self.auths:
            auth.start(timeout=60)
        self.pin = self.auths[0].status()["ca_fingerprints"]["tls"]
        auth_address = self.auths[0].auth
        if self.want_balancer:
            address_file = self.root / "balancer.address"
            log = (self.root / "balancer.log").open("wb")
            self.balancer = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--balancer", str(address_file),
                 *(a.auth for a in self.auths)], stdout=log, stderr=subprocess.STDOUT)
            log.close()
            wait_until(lambda: address_file.exists() and address_file.read_text().strip(),
                       20, "the balancer's address")
            auth_address = self.balancer_address = address_file.read_text().strip()
        listeners = {name: f"127.0.0.1:{free_port()}" for name in ("web", "ssh_proxy", "tunnel")}
        listeners |= {name: "127.0.0.1:0" for name in ("postgres", "mysql", "kube")}
        proxy_config = self.root / "proxy.yaml"
        proxy_config.write_text(yaml.safe_dump({"listeners": listeners}))
        self.proxy = LimenCluster(self.root / "proxy", CLUSTER, [
            "--roles", "proxy", "-c", str(proxy_config), "--auth-server", auth_address,
            "--auth-join", self.auths[0].listeners["auth_join"], "--token", self.proxy_token,
            "--ca-pin", self.pin], random_ports=False).start(timeout=60)
        if self.want_node:
            token = self.auths[0].lmctl_json("tokens", "add", "--type", "node", "--ttl", "10m")
            self.node = LimenCluster(self.root / "node", CLUSTER, [
                "--roles", "node", "--nodename", NODE, "--proxy", self.proxy.web,
                "--token", token["token"], "--ca-pin", self.pin]).start(timeout=60)
        return self

    def stop(self) -> None:
        for proc in (self.node, self.proxy):
            if proc is not None and proc.running:
                with contextlib.suppress(AssertionError):
                    proc.stop(timeout=60)
                proc.kill()
        if self.balancer is not None and self.balancer.poll() is None:
            self.balancer.terminate()
            self.balancer.wait(10)
        for auth in self.auths:
            if auth.running:
                with contextlib.suppress(AssertionError):
                    auth.stop(timeout=60)
                auth.kill()

    def pids(self) -> dict[str, int]:
        out = {f"auth {i}": a.process.pid for i, a in enumerate(self.auths)
               if a.process is not None}
        for name, proc in (("proxy", self.proxy), ("node", self.node)):
            if proc is not None and proc.process is not None:
                out[name] = proc.process.pid
        if self.balancer is not None:
            out["balancer"] = self.balancer.pid
        return out

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of every part (process trees: a node's sessions count), of
        PostgreSQL, of this bench and its reaped children (ssh clients), and of the machine."""
        out = {name: tree_cpu(pid) for name, pid in self.pids().items()}
        out["postgres"] = tree_cpu(postmaster(self.pg))
        own = os.times()
        out["bench"] = own.user + own.system
        out["clients"] = own.children_user + own.children_system
        out["busy"] = _util.system_busy()
        return out


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    used = {k: after[k] - before[k] for k in after if k in before}
    known = sum(v for k, v in used.items() if k != "busy")
    used["other"] = max(0.0, used.pop("busy") - known)
    return used


class Balancer(TcpFailover):
    """``tcp_failover.TcpFailover`` whose upstream sockets block without a timeout: its
    ``socket.create_connection(..., CONNECT_TIMEOUT)`` leaves the 2 s connect timeout on the
    socket, so ``recv`` fails after 2 s of silence and the relay closes both ends; a client
    reusing a keep-alive connection idle that long then gets "Server disconnected"."""

    def _connect(self) -> socket.socket | None:
        upstream = super()._connect()
        if upstream is not None:
            upstream.settimeout(None)
        return upstream


def run_balancer(address_file: Path, backends: list[str]) -> None:
    """``--balancer FILE ADDR...``: a TcpFailover process until SIGTERM."""
    balancer = Balancer(lambda: list(backends)).start()
    tmp = address_file.with_suffix(".tmp")
    tmp.write_text(balancer.address)
    tmp.replace(address_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    balancer.close()


# ====================================================================== 1: logins, SSH sessions


async def sign_up(dep: Deployment, users: list[dict[str, str]]) -> dict[str, Any]:
    """Every user signs up; bench0 logs in once: the key and certificate the SSH part uses."""
    from limen.ca.keys import generate_private_key, private_key_to_openssh, public_key_to_openssh
    from limen.client.webapi import WebApi

    assert dep.proxy is not None
    api, _ping = await WebApi.connect(dep.proxy.web, ca_pin=dep.pin)
    try:
        await asyncio.gather(*(api.signup(link["token"], PASSWORD, None) for link in users))
        key = generate_private_key()
        first = await api.login("bench0", PASSWORD, "", public_key_to_openssh(key.public_key()),
                                None)
        return {"key": private_key_to_openssh(key), "cert": first["ssh_cert"],
                "known_hosts": first["known_hosts"]}
    finally:
        await api.close()


async def logins(dep: Deployment, seconds: float, concurrency: int) -> dict[str, Any]:
    from limen.ca.keys import generate_private_key, public_key_to_openssh
    from limen.client.webapi import WebApi

    assert dep.proxy is not None
    clients = [(await WebApi.connect(dep.proxy.web, ca_pin=dep.pin))[0]
               for _ in range(concurrency)]
    try:
        keys = [public_key_to_openssh(generate_private_key().public_key())
                for _ in range(4000)]
        await asyncio.gather(*(api.login(f"bench{i}", PASSWORD, "", keys[i], None)
                               for i, api in enumerate(clients)))  # warm every connection
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        counter = iter(range(concurrency, len(keys)))
        before = dep.cpu()
        deadline = time.monotonic() + seconds

        async def client(index: int, api: WebApi) -> None:
            while time.monotonic() < deadline:
                start = time.perf_counter()
                try:
                    answer = await api.login(f"bench{index}", PASSWORD, "", keys[next(counter)],
                                             None)
                except Exception as err:
                    failures[f"{type(err).__name__}: {str(err)[:120]}"] += 1
                    continue
                latencies.append(time.perf_counter() - start)
                if not answer.get("ssh_cert"):
                    failures["no certificate in the answer"] += 1

        with _util.timed() as t:
            await asyncio.gather(*(client(i, api) for i, api in enumerate(clients)))
        used = cpu_used(before, dep.cpu())
        return {"count": len(latencies), "seconds": t.seconds, "latencies": latencies,
                "failures": dict(failures), "cpu": used}
    finally:
        for api in clients:
            await api.close()


class SshPaths:
    """The user's key and certificate, a throwaway sshd trusting Limen's user CA, and the
    ssh_config of both paths."""

    def __init__(self, dep: Deployment, login: dict[str, Any], work: Path) -> None:
        self.dir = work
        work.mkdir(parents=True, exist_ok=True)
        assert dep.proxy is not None
        private(work / "id", login["key"])
        (work / "id-cert.pub").write_text(login["cert"].strip() + "\n")
        user_ca = dep.auths[0].lmctl("auth", "export", "--type", "user").stdout
        (work / "user_ca.pub").write_text(user_ca)
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f",
                        str(work / "sshd_key")], check=True)
        self.sshd_port = free_port()
        host_key = (work / "sshd_key.pub").read_text().split()
        (work / "known_hosts").write_text(
            "".join(f"{line}\n" for line in login["known_hosts"])
            + f"[127.0.0.1]:{self.sshd_port} {host_key[0]} {host_key[1]}\n")
        (work / "sshd_config").write_text(f"""
Port {self.sshd_port}
ListenAddress 127.0.0.1
HostKey {work}/sshd_key
TrustedUserCAKeys {work}/user_ca.pub
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
StrictModes no
PermitRootLogin prohibit-password
MaxStartups 200:30:400
""")
        os.makedirs("/run/sshd", exist_ok=True)
        self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(work / "sshd_config")],
                                     stdout=subprocess.DEVNULL,
                                     stderr=(work / "sshd.log").open("wb"))
        proxy_host, proxy_port = dep.proxy.listeners["ssh_proxy"].rsplit(":", 1)
        self.config = work / "ssh_config"
        self.config.write_text(f"""
Host *
    User {LOGIN}
    IdentityFile {work}/id
    CertificateFile {work}/id-cert.pub
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile {work}/known_hosts
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
        for path in ("direct", "limen"):
            wait_until(lambda p=path: self.run(p)[0] == 0, 30, f"a first {path} session")

    def command(self, path: str) -> list[str]:
        base = [SSH, "-F", str(self.config)]
        return [*base, "sshd-ref", "true"] if path == "direct" else \
            [*base, "-J", "proxy", NODE, "true"]

    def run(self, path: str) -> tuple[int, str]:
        result = subprocess.run(self.command(path), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=60, check=False)
        return result.returncode, result.stderr.strip()[:200]

    def close(self) -> None:
        if self.sshd.poll() is None:
            self.sshd.terminate()
            self.sshd.wait(10)


def sessions(dep: Deployment, paths: SshPaths, path: str, count: int,
             concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    lock = threading.Lock()

    def one(_index: int) -> None:
        with _util.timed() as t:
            code, err = paths.run(path)
        with lock:
            if code == 0:
                latencies.append(t.seconds)
            else:
                failures[f"exit {code}: {err}"] += 1

    before = dep.cpu()
    before["sshd"] = tree_cpu(paths.sshd.pid)
    with ThreadPoolExecutor(concurrency) as pool, _util.timed() as t:
        list(pool.map(one, range(count)))
    after = dep.cpu()
    after["sshd"] = tree_cpu(paths.sshd.pid)
    return {"count": len(latencies), "seconds": t.seconds, "latencies": latencies,
            "failures": dict(failures), "cpu": cpu_used(before, after)}


def add_users(dep: Deployment, count: int) -> list[dict[str, str]]:
    role_file = dep.root / "role.yaml"
    role_file.write_text(ROLE)
    dep.auths[0].lmctl("apply", "-f", str(role_file))
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda i: dep.auths[0].add_user(f"bench{i}", ["bench"], [LOGIN]),
                             range(count)))


def part_requests(pg: PostgresServer, work: Path, args: argparse.Namespace
                  ) -> list[dict[str, Any]]:
    """Both configurations run side by side (idle apart from what is measured); the
    measurements alternate between them, ``--rounds`` times, and are pooled per
    configuration (a shared machine's load drifts: alternating spreads it evenly)."""
    deps: dict[int, Deployment] = {}
    paths: dict[int, SshPaths] = {}
    try:
        for replicas in args.replicas:
            print(f"\n[requests] {replicas} auth replica(s): starting the cluster ...",
                  flush=True)
            dep = deps[replicas] = Deployment(work / f"r{replicas}", pg, f"limen_r{replicas}",
                                              replicas, balancer=True, node=True).start()
            login = asyncio.run(sign_up(dep, add_users(dep, args.concurrency)))
            if "ssh" in args.parts:
                paths[replicas] = SshPaths(dep, login, dep.root / "ssh")
        runs: dict[int, dict[str, Any]] = {r: {"replicas": r, "load_start": loadavg()}
                                           for r in deps}
        for round_no in range(args.rounds):
            print(f"\n[requests] round {round_no + 1} of {args.rounds}", flush=True)
            for replicas, dep in deps.items():
                result = asyncio.run(logins(dep, args.seconds, args.concurrency))
                show(f"{replicas} auth, logins ({args.concurrency} clients)", result)
                merge(runs[replicas], "logins", result)
            for path in ("direct", "limen") if paths else ():
                for replicas, dep in deps.items():
                    result = sessions(dep, paths[replicas], path, args.sessions,
                                      args.ssh_concurrency)
                    show(f"{replicas} auth, ssh {path} ({args.ssh_concurrency} at a time)",
                         result)
                    merge(runs[replicas], f"ssh {path}", result)
        for run in runs.values():
            run["load_end"] = loadavg()
        return list(runs.values())
    finally:
        for ssh_paths in paths.values():
            ssh_paths.close()
        for dep in deps.values():
            dep.stop()


def merge(run: dict[str, Any], key: str, result: dict[str, Any]) -> None:
    """Pool ``result`` into ``run[key]``: counts, seconds, latencies, failures and CPU add
    up; ``rates`` keeps each round's rate."""
    rate = _util.per_second(result["count"], result["seconds"])
    total = run.get(key)
    if total is None:
        run[key] = {**result, "rates": [rate]}
        return
    total["count"] += result["count"]
    total["seconds"] += result["seconds"]
    total["latencies"] += result["latencies"]
    total["failures"] = dict(Counter(total["failures"]) + Counter(result["failures"]))
    total["cpu"] = {k: total["cpu"].get(k, 0.0) + result["cpu"].get(k, 0.0)
                    for k in {*total["cpu"], *result["cpu"]}}
    total["rates"].append(rate)


def show(label: str, result: dict[str, Any]) -> None:
    rate = _util.per_second(result["count"], result["seconds"])
    lat = [1000 * v for v in result["latencies"]]
    cpu = ", ".join(f"{k} {v:.1f}" for k, v in result["cpu"].items() if v >= 0.05)
    print(f"  {label}: {result['count']} in {result['seconds']:.1f} s = {rate:.1f}/s, p50 "
          f"{_util.percentile(lat, 50):.0f} ms, p99 {_util.percentile(lat, 99):.0f} ms; "
          f"failures {result['failures'] or 0}; CPU s: {cpu}", flush=True)


# ====================================================================== 2: idle agents (workers)


async def worker_main(proxy: str, token: str, pin: str, index: int, push: bool = True) -> None:
    """``--agent-worker``: agents joined, connected and polled on command (stdin lines, JSON
    answers on stdout): ``join N``, ``connect N`` (tunnels of N more joined hosts), ``poll N``
    (trust on for the first N of this worker's agents: polled, and pushed by the proxy when
    ``push``, as a node does since issue #17), ``status``, ``stop``."""
    from limen.agents.auth_link import AuthLink
    from limen.agents.node.node_service import node_resource
    from limen.auth.join_client import pinned_proxy
    from limen.ca.host_credentials import HostCredentials
    from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
    from limen.net.http import ApiClient
    from limen.trust.roots_poller import RemoteTrustCache
    from limen.tunnel.agent_pool import TunnelAgentPool
    from limen.tunnel.agent_settings import TunnelAgentSettings

    logging.basicConfig(level=logging.ERROR)  # a failed poll logs a warning per agent
    raise_nofile()
    context, _ping = await pinned_proxy(proxy, pin)
    api = ApiClient(f"https://{proxy}", context)
    agents: list[dict[str, Any]] = []
    joined: list[HostCredentials] = []
    tunnel = ""
    loop = asyncio.get_running_loop()
    polls: Counter[bool] = Counter()
    pushes: Counter[bool] = Counter()

    class CountingTrust(RemoteTrustCache):
        """The node's trust, counting its answered and failed polls and the pushed answers
        it accepted or not."""

        async def refresh(self) -> bool:
            answered = await super().refresh()
            polls[answered] += 1
            return answered

        def pushed(self, doc: Any, proxy: str = "") -> bool:
            accepted = super().pushed(doc, proxy)
            pushes[accepted] += 1
            return accepted

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    join_errors: Counter[str] = Counter()

    async def handler(sock: socket.socket, _request: Any) -> None:
        sock.close()  # idle agents: no session is ever dialled

    async def join(number: int) -> Any:
        name = f"bench-{index}-{number}"
        key = generate_private_key()
        body = {"token": token, "role": "node", "host_id": "", "hostname": name,
                "public_key": public_key_to_openssh(key.public_key()), "addresses": []}
        for _attempt in range(5):
            try:
                answer = await api.call("POST", "/v1/webapi/join", body)
                break
            except Exception as err:
                join_errors[f"{type(err).__name__}: {str(err)[:100]}"] += 1
                await asyncio.sleep(1)
        else:
            return None
        return HostCredentials(
            cluster=answer["cluster"], host_id=str(answer["host_id"]), role="node",
            hostname=name, private_key_pem=private_key_to_pem(key).encode(),
            tls_cert_pem=answer["tls_cert"].encode(), tls_ca_pem=answer["tls_cas"].encode(),
            ssh_cert=answer["ssh_cert"].encode(), user_ca_keys=tuple(answer["user_ca_keys"]),
            host_ca_keys=tuple(answer["host_ca_keys"]))

    async def join_all(count: int) -> dict[str, Any]:
        """Join ``count`` more hosts (8 at a time); their credentials wait in ``joined``."""
        nonlocal tunnel
        from limen.agents.joining import tunnel_address

        start = time.monotonic()
        gate = asyncio.Semaphore(8)

        async def gated(number: int) -> Any:
            async with gate:
                return await join(number)

        first = len(joined)
        joined.extend(c for c in await asyncio.gather(*(gated(first + i)
                                                         for i in range(count)))
                      if c is not None)
        if joined and not tunnel:
            tunnel = await tunnel_address(proxy, joined[0])
        return {"joined": len(joined), "join_seconds": time.monotonic() - start,
                "join_errors": dict(join_errors)}

    async def connect(count: int) -> dict[str, Any]:
        """Start the tunnels of ``count`` more joined hosts; wait until all are connected."""
        start = time.monotonic()
        new = []
        for creds in joined[len(agents):len(agents) + count]:
            doc = node_resource(creds.hostname, {"env": "bench"}, "127.0.0.1:3022",
                                creds.host_id)  # a node's own SSH listener, never dialled
            agent: dict[str, Any] = {"creds": creds, "link": None, "trust": None}

            def on_trust(message: Any, proxy_id: str, agent: dict[str, Any] = agent) -> None:
                if agent["trust"] is not None:
                    agent["trust"].pushed(message.doc, proxy_id)

            pool = TunnelAgentPool(tunnel, creds, handler, lambda d=doc: d,
                                   settings=TunnelAgentSettings(
                                       on_trust=on_trust if push else None))
            agent["pool"] = pool
            await pool.start()
            new.append(agent)
            agents.append(agent)
        waits = [asyncio.create_task(a["pool"].connected.wait()) for a in new]
        if waits:
            _done, pending = await asyncio.wait(waits, timeout=CONNECT_DEADLINE)
            for task in pending:
                task.cancel()
        return {"connect_seconds": time.monotonic() - start, **status()}

    async def poll(count: int) -> dict[str, Any]:
        start = time.monotonic()
        for agent in agents[:count]:
            if agent["trust"] is None:
                link = AuthLink(agent["creds"])
                await link.attach(agent["pool"])
                trust = CountingTrust(link.client, agent["creds"].cluster,
                                      agent["creds"].user_ca_keys,
                                      tls_ca_pem=agent["creds"].tls_ca_pem)
                agent["link"], agent["trust"] = link, trust
                await trust.start()
        deadline = time.monotonic() + POLL_DEADLINE
        while time.monotonic() < deadline and not all(  # noqa: ASYNC110 (no event for it)
                a["trust"]._fresh_at is not None for a in agents[:count]):
            await asyncio.sleep(0.2)  # polling the caches' state, bounded by the deadline
        return {"first_poll_seconds": time.monotonic() - start, **status()}

    def status() -> dict[str, Any]:
        now = time.monotonic()
        errors = Counter(a.last_error[:100] for agent in agents
                         for a in agent["pool"].agents.values() if a.last_error)
        polling = [a["trust"] for a in agents if a["trust"] is not None]
        return {"agents": len(agents),
                "connected": sum(a["pool"].connected.is_set() for a in agents),
                "tunnels": sum(len(a["pool"].agents) for a in agents),
                "reconnects": sum(max(0, t.connections - 1) for a in agents
                                  for t in a["pool"].agents.values()),
                "polling": len(polling),
                "polls_ok": polls[True], "polls_failed": polls[False],
                "pushes_ok": pushes[True], "pushes_other": pushes[False],
                "poll_fresh": sum(t._fresh_at is not None and now - t._fresh_at < 10
                                  for t in polling),
                "errors": dict(errors.most_common(3)), "rss_kib": rss_kib(os.getpid()),
                "fds": fd_count(os.getpid())}

    print(json.dumps({"ready": True}), flush=True)
    while line := (await reader.readline()).decode().strip():
        verb, _, value = line.partition(" ")
        if verb == "join":
            answer = await join_all(int(value))
        elif verb == "connect":
            answer = await connect(int(value))
        elif verb == "poll":
            answer = await poll(int(value))
        elif verb == "status":
            answer = status()
        else:
            break
        print(json.dumps(answer), flush=True)
    for agent in agents:
        if agent["trust"] is not None:
            await agent["trust"].stop()
        await agent["pool"].stop()
        if agent["link"] is not None:
            await agent["link"].close()
    await api.close()


class Workers:
    def __init__(self, count: int, proxy: str, token: str, pin: str, work: Path, *,
                 push: bool = True) -> None:
        self.procs = []
        for index in range(count):
            log = (work / f"worker-{index}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--agent-worker", proxy, token,
                 pin, str(index), "push" if push else "poll"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log)
            log.close()
            self.procs.append(proc)
        for answer in self.ask_each([None] * count):
            assert answer.get("ready"), answer

    def ask_each(self, lines: list[str | None]) -> list[dict[str, Any]]:
        for proc, line in zip(self.procs, lines, strict=True):
            if line is not None:
                assert proc.stdin is not None
                proc.stdin.write((line + "\n").encode())
                proc.stdin.flush()
        out = []
        for proc in self.procs:
            assert proc.stdout is not None
            text = proc.stdout.readline()
            if not text:
                raise SystemExit(f"agent worker {proc.pid} exited ({proc.poll()}); see its log")
            out.append(json.loads(text))
        return out

    def cpu(self) -> float:
        return sum(tree_cpu(p.pid) for p in self.procs)

    def rss_kib(self) -> int:
        return sum(rss_kib(p.pid) for p in self.procs if p.poll() is None)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.write(b"stop\n")
                    proc.stdin.flush()
        for proc in self.procs:
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def heartbeats_lost(proxy: LimenCluster) -> int:
    """Heartbeats the proxy could not record at auth so far (its log says each)."""
    with (proxy.root / "limen.err").open("rb") as log:
        return sum(b"cannot record the heartbeat" in line for line in log)


def live_presence(pg: PostgresServer, database: str) -> int:
    return int(pg.sql("SELECT count(*) FROM limen_backend_items WHERE key LIKE "
                      "'/presence/nodes/%' AND expires > extract(epoch FROM now())",
                      db=database))


def part_agents(pg: PostgresServer, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    print("\n[agents] one auth (PostgreSQL) + one proxy ...", flush=True)
    database = "limen_agents"
    dep = Deployment(work / "agents", pg, database, 1, balancer=False, node=False)
    stages: list[dict[str, Any]] = []
    result: dict[str, Any] = {"stages": stages}
    workers: Workers | None = None
    try:
        dep.start()
        assert dep.proxy is not None
        assert dep.proxy.process is not None
        proxy_pid = dep.proxy.process.pid
        auth_pid = dep.auths[0].process.pid  # type: ignore[union-attr]
        token = dep.auths[0].lmctl_json("tokens", "add", "--type", "node", "--ttl", "2h",
                                        "--reusable")["token"]
        most = max(n for kind, n in args.stages if kind == "agents")
        count = max(1, -(-most // PER_WORKER_MAX), args.workers)
        workers = Workers(count, dep.proxy.web, token, dep.pin, dep.root,
                          push=args.trust_push)
        time.sleep(3)  # let the fresh proxy settle before its baseline (a measurement)
        result["baseline"] = {"proxy_rss": rss_kib(proxy_pid), "auth_rss": rss_kib(auth_pid),
                              "proxy_fds": fd_count(proxy_pid), "workers": count}
        print(f"  baseline: proxy RSS {result['baseline']['proxy_rss']} KiB, auth RSS "
              f"{result['baseline']['auth_rss']} KiB; {count} worker processes", flush=True)
        print(f"  joining {most} hosts (8 at a time per worker) ...", flush=True)
        before = dep.cpu()
        answers = workers.ask_each([f"join {n}" for n in split(most, count)])
        result["joins"] = {"count": sum(a["joined"] for a in answers),
                           "seconds": max(a["join_seconds"] for a in answers),
                           "errors": dict(sum((Counter(a["join_errors"]) for a in answers),
                                              Counter())),
                           "cpu": cpu_used(before, dep.cpu())}
        joins = result["joins"]
        print(f"  joined {joins['count']} in {joins['seconds']:.0f} s "
              f"({joins['count'] / joins['seconds']:.0f}/s); CPU s: auth "
              f"{joins['cpu']['auth 0']:.0f}, proxy {joins['cpu']['proxy']:.0f}, postgres "
              f"{joins['cpu']['postgres']:.0f}; errors {joins['errors'] or 0}", flush=True)
        time.sleep(3)  # the joins' last writes settle before the baseline (a measurement)
        result["baseline"]["proxy_rss_joined"] = rss_kib(proxy_pid)
        have = 0
        for kind, target in args.stages:
            stage: dict[str, Any] = {"kind": kind, "n": target, "load_start": loadavg()}
            before = dep.cpu()
            if kind == "agents":
                adds = split(target - have, count)
                print(f"  stage: {target} agents (+{target - have}) ...", flush=True)
                answers = workers.ask_each([f"connect {n}" for n in adds])
                have = target
                stage["connect_seconds"] = max(a["connect_seconds"] for a in answers)
            else:
                target = min(target, have)
                stage["n"] = target
                print(f"  stage: trust poll on for {target} of {have} agents ...", flush=True)
                answers = workers.ask_each([f"poll {n}" for n in split(target, count)])
                stage["first_poll_seconds"] = max(a["first_poll_seconds"] for a in answers)
            stage["setup_cpu"] = cpu_used(before, dep.cpu())
            stage["setup_cpu"]["workers"] = 0.0
            time.sleep(2)  # the last heartbeats of the setup: not part of the idle window
            before = dep.cpu()
            workers_before = workers.cpu()
            polled_before = workers.ask_each(["status"] * count)
            lost_before = heartbeats_lost(dep.proxy)
            with _util.timed() as idle:
                time.sleep(args.idle)  # the idle window itself is what is measured
            used = cpu_used(before, dep.cpu())
            used["workers"] = workers.cpu() - workers_before
            used["other"] = max(0.0, used["other"] - used["workers"])
            answers = workers.ask_each(["status"] * count)
            stage.update({
                "polls_ok": sum(a["polls_ok"] for a in answers)
                - sum(a["polls_ok"] for a in polled_before),
                "polls_failed": sum(a["polls_failed"] for a in answers)
                - sum(a["polls_failed"] for a in polled_before),
                "pushes_ok": sum(a["pushes_ok"] for a in answers)
                - sum(a["pushes_ok"] for a in polled_before),
                "pushes_other": sum(a["pushes_other"] for a in answers)
                - sum(a["pushes_other"] for a in polled_before),
                "heartbeats_lost": heartbeats_lost(dep.proxy) - lost_before,
                "idle_seconds": idle.seconds, "idle_cpu": used,
                "proxy_rss": rss_kib(proxy_pid), "auth_rss": rss_kib(auth_pid),
                "proxy_fds": fd_count(proxy_pid), "auth_fds": fd_count(auth_pid),
                "workers_rss": workers.rss_kib(),
                "connected": sum(a["connected"] for a in answers),
                "agents": sum(a["agents"] for a in answers),
                "polling": sum(a["polling"] for a in answers),
                "poll_fresh": sum(a["poll_fresh"] for a in answers),
                "reconnects": sum(a["reconnects"] for a in answers),
                "errors": dict(sum((Counter(a["errors"]) for a in answers), Counter())),
                "presence": live_presence(pg, database), "load_end": loadavg()})
            stages.append(stage)
            show_stage(stage, result["baseline"])
            if stage["connected"] < stage["agents"] * 0.9:
                print("  fewer than 90% of the agents are connected: stopping here", flush=True)
                break
    finally:
        if workers is not None:
            workers.stop()
        dep.stop()
    return result


def show_stage(stage: dict[str, Any], base: dict[str, Any]) -> None:
    n = stage["agents"]
    per = (stage["proxy_rss"] - base.get("proxy_rss_joined", base["proxy_rss"])) / max(n, 1)
    cpu = stage["idle_cpu"]
    secs = stage["idle_seconds"]
    setup = ", ".join(f"{k} {v:.0f}" for k, v in stage["setup_cpu"].items() if v >= 0.5)
    print(f"    setup CPU s: {setup}; in the idle window: {stage['polls_ok']} polls answered, "
          f"{stage['polls_failed']} failed, {stage['pushes_ok']} pushed answers accepted, "
          f"{stage['pushes_other']} not, {stage['heartbeats_lost']} heartbeats not recorded "
          f"of ~{stage['connected'] * secs / 10:.0f}", flush=True)
    print(f"    {stage['connected']}/{n} connected, {stage['polling']} polling "
          f"({stage['poll_fresh']} fresh), presence {stage['presence']}; proxy RSS "
          f"{stage['proxy_rss']} KiB ({per:.1f} KiB/agent), fds {stage['proxy_fds']}; auth RSS "
          f"{stage['auth_rss']} KiB; idle CPU (cores): proxy {cpu.get('proxy', 0) / secs:.2f} "
          f"auth {cpu.get('auth 0', 0) / secs:.2f} postgres {cpu.get('postgres', 0) / secs:.2f}"
          f" workers {cpu['workers'] / secs:.2f} other {cpu['other'] / secs:.2f}; reconnects "
          f"{stage['reconnects']}; errors {stage['errors'] or 0}", flush=True)


# ====================================================================== report


def ms(values: list[float], pct: float) -> str:
    return f"{1000 * _util.percentile(values, pct):.0f}" if values else "-"


def report(facts: dict[str, str], args: argparse.Namespace, runs: list[dict[str, Any]],
           agents: dict[str, Any] | None, started: float) -> str:
    lines = [f"### {time.strftime('%Y-%m-%d %H:%M')}", "",
             "machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), "",
             "command: `" + shlex.join([".venv/bin/python", "bench/bench_ha.py", *sys.argv[1:]])
             + "`", "",
             f"load: loadavg {facts['loadavg']} at the start, {loadavg()} at the end; whole run "
             f"{time.monotonic() - started:.0f} s. PostgreSQL 15 with fsync, synchronous_commit "
             "and full_page_writes on; auth with `--insecure-second-factor-off`.", ""]
    if runs:
        lines += ["| measure | " + " | ".join(f"{r['replicas']} auth" for r in runs) + " |",
                  "|---|" + "---:|" * len(runs)]

        def row(label: str, cell: Any) -> None:
            lines.append(f"| {label} | " + " | ".join(cell(r) for r in runs) + " |")

        def rate(key: str) -> Any:
            return lambda r: (f"{_util.per_second(r[key]['count'], r[key]['seconds']):.1f} "
                              f"[{', '.join(f'{v:.1f}' for v in r[key]['rates'])}]"
                              if key in r else "-")

        def cpu_per(key: str, part: str) -> Any:
            def cell(r: dict[str, Any]) -> str:
                if key not in r or not r[key]["count"]:
                    return "-"
                return f"{1000 * r[key]['cpu'].get(part, 0.0) / r[key]['count']:.1f}"
            return cell

        row(f"logins/s ({args.concurrency} clients, {args.rounds} x {args.seconds:g} s; "
            "[each round])", rate("logins"))
        row("login p50 / p99 ms", lambda r: f"{ms(r['logins']['latencies'], 50)} / "
            f"{ms(r['logins']['latencies'], 99)}")
        for part in ("auth 0", "auth 1", "proxy", "balancer", "postgres", "bench", "other"):
            row(f"login CPU-ms/login: {part}", cpu_per("logins", part))
        for path in ("direct", "limen"):
            key = f"ssh {path}"
            label = "sshd straight" if path == "direct" else "ssh -J proxy node"
            row(f"SSH sessions/s, {label} ({args.ssh_concurrency} at a time)", rate(key))
            row(f"SSH {path} p50 / p99 ms", lambda r, k=key: (
                f"{ms(r[k]['latencies'], 50)} / {ms(r[k]['latencies'], 99)}" if k in r else "-"))
        for part in ("auth 0", "auth 1", "proxy", "node", "balancer", "postgres", "clients",
                     "other"):
            row(f"SSH CPU-ms/session via Limen: {part}", cpu_per("ssh limen", part))
        for part in ("sshd", "clients"):
            row(f"SSH CPU-ms/session direct: {part}", cpu_per("ssh direct", part))
        row("failures (logins, ssh direct, ssh limen)", lambda r: ", ".join(
            str(sum(r[k]["failures"].values())) if k in r else "-"
            for k in ("logins", "ssh direct", "ssh limen")))
        row("loadavg start / end", lambda r: f"{r['load_start']} / {r['load_end']}")
        lines.append("")
    if agents:
        base = agents["baseline"]
        joins = agents["joins"]
        lines += [f"Joins first: {joins['count']:,} hosts joined through the proxy's "
                  f"`/v1/webapi/join` in {joins['seconds']:.0f} s "
                  f"({joins['count'] / joins['seconds']:.0f}/s, 8 at a time per harness "
                  f"process); CPU seconds: auth {joins['cpu'].get('auth 0', 0):.0f}, proxy "
                  f"{joins['cpu'].get('proxy', 0):.0f}, PostgreSQL "
                  f"{joins['cpu'].get('postgres', 0):.0f}; errors "
                  f"{joins['errors'] or 'none'}. Proxy RSS after the joins, before any tunnel: "
                  f"{base['proxy_rss_joined']:,} KiB (the KiB/agent column counts from there).",
                  "", f"Idle agents on one proxy ({base['workers']} harness processes; proxy RSS "
                  f"before any agent {base['proxy_rss']:,} KiB, auth {base['auth_rss']:,} KiB; "
                  f"idle window {args.idle:g} s):", "",
                  "| stage | connected | trust-polling (fresh) | live presence | proxy RSS KiB "
                  "| KiB/agent | proxy fds | auth RSS KiB | s until all connected | idle "
                  "CPU cores: proxy, auth, postgres, harness, other | heartbeats not recorded "
                  "/ sent | trust polls answered / failed | reconnects | errors |",
                  "|---|" + "---:|" * 12 + "---|"]
        for s in agents["stages"]:
            secs = s["idle_seconds"]
            cpu = s["idle_cpu"]
            label = (f"{s['n']:,} agents" if s["kind"] == "agents"
                     else f"{s['n']:,} agents polling trust")
            timing = (f"{s['connect_seconds']:.0f}" if s["kind"] == "agents"
                      else f"first polls {s['first_poll_seconds']:.0f}")
            errors = "; ".join(f"{k} x{v}" for k, v in s["errors"].items()) or "-"
            lines.append(
                f"| {label} | {s['connected']:,} / {s['agents']:,} | {s['polling']:,} "
                f"({s['poll_fresh']:,}) | {s['presence']:,} | {s['proxy_rss']:,} | "
                f"{(s['proxy_rss'] - base['proxy_rss_joined']) / max(s['agents'], 1):.1f} | "
                f"{s['proxy_fds']:,} | {s['auth_rss']:,} | {timing} | "
                f"{cpu.get('proxy', 0) / secs:.2f}, {cpu.get('auth 0', 0) / secs:.2f}, "
                f"{cpu.get('postgres', 0) / secs:.2f}, {cpu['workers'] / secs:.2f}, "
                f"{cpu['other'] / secs:.2f} | {s['heartbeats_lost']:,} / "
                f"{s['connected'] * secs / 10:,.0f} | {s['polls_ok']:,} / {s['polls_failed']:,} | "
                f"{s['reconnects']:,} | {errors} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def record(text: str) -> None:
    """Append the run to the section (created at the end of the file if missing), re-reading
    RESULTS.md right before writing."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    head, sep, rest = current.partition(f"\n{SECTION}\n")
    if not sep:
        RESULTS.write_text(current.rstrip("\n") + f"\n\n{SECTION}\n\n" + text)
        return
    following = rest.find("\n## ")
    body, tail = (rest[:following], rest[following:]) if following >= 0 else (rest, "")
    RESULTS.write_text(head + sep + body.rstrip("\n") + "\n\n" + text + tail)


def versions() -> dict[str, str]:
    out = {}
    with contextlib.suppress(OSError, IndexError):
        out["postgresql"] = subprocess.run(
            ["/usr/lib/postgresql/15/bin/postgres", "--version"], capture_output=True,
            text=True, check=False).stdout.split()[2]
    with contextlib.suppress(OSError, IndexError):
        out["openssh"] = subprocess.run([SSH, "-V"], capture_output=True, text=True,
                                        check=False).stderr.split(",")[0]
    out["memory"] = f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') >> 30} GiB"
    out["open files"] = "{} soft / {} hard".format(*resource.getrlimit(resource.RLIMIT_NOFILE))
    out["local ports"] = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().strip() \
        .replace("\t", "-")
    return out


def stages_arg(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        kind, _, number = item.partition(":")
        if kind not in ("agents", "poll"):
            raise argparse.ArgumentTypeError(f"a stage is agents:N or poll:N, not {item!r}")
        out.append((kind, int(number)))
    return out


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--balancer":
        run_balancer(Path(sys.argv[2]), sys.argv[3:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--agent-worker":
        proxy, token, pin, index, mode = sys.argv[2:7]
        asyncio.run(worker_main(proxy, token, pin, int(index), push=mode == "push"))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--part", default="logins,ssh,agents",
                        help="comma list of logins, ssh, agents")
    parser.add_argument("--replicas", type=ints, default=[1, 2])
    parser.add_argument("--seconds", type=float, default=15.0, help="of timed logins")
    parser.add_argument("--rounds", type=int, default=2,
                        help="rounds alternating the configurations; pooled")
    parser.add_argument("--concurrency", type=int, default=8, help="login clients (= users)")
    parser.add_argument("--sessions", type=int, default=80, help="ssh sessions per path")
    parser.add_argument("--ssh-concurrency", type=int, default=8)
    parser.add_argument("--stages", type=stages_arg, default=stages_arg(
        "agents:1000,agents:2000,agents:3000,agents:4000,agents:5000,poll:1000"),
                        help="agents:N connects agents up to N (heartbeats); poll:N turns the "
                        "trust poll on for the first N agents")
    parser.add_argument("--idle", type=float, default=20.0, help="idle window per stage, s")
    parser.add_argument("--no-trust-push", dest="trust_push", action="store_false",
                        help="the agents do not ask for pushed trust answers (a node before "
                        "issue #17: the poll:N stages poll auth every 3 s)")
    parser.add_argument("--workers", type=int, default=4, help="agent harness processes")
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args()
    args.parts = set(args.part.split(","))
    raise_nofile()
    facts = {**_util.machine_facts(), **versions()}
    _util.print_machine(facts)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="limen-bench-ha-"))
    runs: list[dict[str, Any]] = []
    agents = None
    try:
        with start_postgres(work / "postgres") as pg:
            durable(pg)
            if args.parts & {"logins", "ssh"}:
                runs = part_requests(pg, work, args)
            if "agents" in args.parts:
                agents = part_agents(pg, work, args)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = report(facts, args, runs, agents, started)
    print()
    print(text)
    if args.record:
        record(text)


if __name__ == "__main__":
    main()
