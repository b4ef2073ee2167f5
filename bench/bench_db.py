"""PostgreSQL through Limen's proxy and db agent, next to direct TLS and an OpenSSH bastion
(not a test: run by hand, ``python bench/bench_db.py``; see bench/README.md).

Five paths to the same PostgreSQL 15 (``start_postgres`` of ``tests/dbservers.py``), each TLS
end to end to the database with a client certificate and ``sslmode=verify-full``:

* ``direct``   pgbench/psql -> PostgreSQL, with a client certificate (CN=alice) of a bench CA
               the server trusts next to Limen's DB CA: the reference;
* ``bastion``  pgbench/psql -> ``ssh -N -L PORT:127.0.0.1:PGPORT`` -> a throwaway sshd on
               127.0.0.1 (OpenSSH's default algorithms) -> PostgreSQL: a team without Limen;
* ``bastion-log``  the same bastion to a copy of the tables in a second database, ``app_log``,
               whose every statement PostgreSQL writes to its log (``ALTER DATABASE app_log SET
               log_statement = 'all'``; the server's log file, not fsynced, no hash chain): a
               team without Limen that wants each query in a log (pgbench only);
* ``limen``    pgbench/psql ``service=bench-pg`` (written by ``lmsh db login``) -> the proxy's
               PostgreSQL front -> db agent (client certificate CN=alice of the DB CA) ->
               PostgreSQL; one ``limen start --roles auth,proxy,node,db`` process, so the
               proxy reaches its agent over an in-memory connection (a db agent apart from
               auth is reached through its tunnel), every query audited in the agent's
               batched audit buffer; set up as tests/integration/db_env.py does (role,
               ``lmctl apply`` of a db Resource, sign-up, ``lmsh login``, ``lmsh db login``);
* ``limen-apart``  the same, to a second db Resource served by a db agent in a process of its
               own (``limen start --roles db --token T --ca-pin P --proxy WEB``, as a
               production agent next to its database runs), reached only through its
               reverse tunnel: the proxy relays the client's TLS to a TLS data connection
               (``service=bench-pg-apart``); the middle's CPU is both processes'.

Measured ``--rounds`` times, the paths interleaved within each round (a shared machine's load
drifts), the median round reported:

1. ``pgbench -n -S -c N -j min(N,2) -T DURATION -l`` at 1 and 16 clients (``--clients``) on
   tables made once, directly, by ``pgbench -i -s SCALE``: TPS as pgbench prints it (without
   the initial connections), latency p50/p99 over every transaction of the per-transaction
   logs, and CPU seconds of pgbench, of the middle (the limen process tree; ssh + the sshd
   tree), of PostgreSQL (postmaster and its backends) and of every other process;
2. ``psql -c "\\copy bench_copy from 'FILE' csv"`` of a ``--copy-mb`` CSV into an unlogged
   table, then ``\\copy bench_copy to 'FILE' csv`` back: MB/s (10^6 bytes), each including
   psql's connection setup.

``--perf`` runs ``perf record`` on the limen process during its last run at the most clients
and prints where its CPU went (by shared object and symbol) and its threads' CPU seconds.
``--diag`` serves the limen process's metrics (``diag_addr``), as a production cluster would:
every audit event written is then counted too. ``--record`` appends the run to the
"## Databases (PostgreSQL)" section of bench/RESULTS.md.

Usage: ``python bench/bench_db.py [--duration 10] [--scale 5] [--copy-mb 200] [--rounds 1]
[--clients 1,16] [--perf] [--diag] [--record]``; the defaults take about three minutes,
``--rounds 3`` about eight.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _util
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the test helpers: real servers and clusters

from dbservers import PostgresServer, start_postgres  # noqa: E402
from integration.cluster import LimenCluster, LimenUser, command, run, wait_for  # noqa: E402
from ports import free_port  # noqa: E402

RESULTS = HERE / "RESULTS.md"
SECTION = "## Databases (PostgreSQL)"
PATHS = ("direct", "bastion", "bastion-log", "limen", "limen-apart")
COPY_PATHS = ("direct", "bastion", "limen", "limen-apart")
"""``\\copy`` is one statement: the statement log would measure nothing new."""
SSH, SSHD, SSH_KEYGEN = "/usr/bin/ssh", "/usr/sbin/sshd", "/usr/bin/ssh-keygen"
PGBENCH, PSQL = "/usr/bin/pgbench", "/usr/bin/psql"
CLUSTER, DB, DB_USER, DB_NAME = "bench", "pg", "alice", "app"
DB_APART = "pg-apart"
LIMEN_PATHS = {"limen": DB, "limen-apart": DB_APART}
"""Each Limen path and the db Resource it reaches."""
LOGGED_DB_NAME = "app_log"
HOST = "127.0.0.1"
PAD = "abcdefghij" * 6
CLK_TCK = os.sysconf("SC_CLK_TCK")


def limen_objects(pg_port: int) -> str:
    """The role alice gets and the database Resources: one the cluster's own db agent serves,
    one the agent apart serves (told apart by ``served-by``)."""
    return f"""
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: db-bench}}
spec:
  allow:
    db_labels: {{env: bench}}
    db_users: [{DB_USER}]
    db_names: [{DB_NAME}]
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: {DB}, labels: {{env: bench, served-by: cluster}}}}
spec: {{kind: db, protocol: postgres, address: "{HOST}:{pg_port}"}}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: {DB_APART}, labels: {{env: bench, served-by: apart}}}}
spec: {{kind: db, protocol: postgres, address: "{HOST}:{pg_port}"}}
"""


# ====================================================================== processes and CPU


def _stat(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (field 3 onwards)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its live descendants, each with the CPU of the children it
    has already reaped (so a backend that exited still counts, in its parent's)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                children.setdefault(int(_stat(entry.name)[1]), []).append(int(entry.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        with contextlib.suppress(OSError, IndexError):
            fields = _stat(pid)
            total += sum(int(v) for v in fields[11:15]) / CLK_TCK
            todo.extend(children.get(pid, ()))
    return total


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of ``pid``, keyed ``comm/tid``."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            comm = (task / "comm").read_text().strip()
            out[f"{comm}/{task.name}"] = _util.process_cpu(pid, int(task.name))
    return out


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def client_env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) without PG* settings from the caller's
    shell, in the C locale, plus ``extra``."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(("PG", "LC_"))}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8", **extra)
    return env


def perf_env() -> dict[str, str]:
    """perf embeds Python: keep this process's PYTHONPATH/PYTHONHOME away from it."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ====================================================================== the three paths


def write_client_ca(directory: Path) -> tuple[bytes, Path, Path]:
    """A throwaway CA and its client certificate CN=alice for the direct and bastion paths:
    (CA PEM, certificate path, key path 0600)."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench direct-client CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DB_USER)]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = directory / "direct-client.crt", directory / "direct-client.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return ca.public_bytes(serialization.Encoding.PEM), cert_path, key_path


class Bastion:
    """A throwaway sshd on 127.0.0.1 and a long-lived ``ssh -N -L`` through it."""

    def __init__(self, directory: Path, pg_port: int) -> None:
        self.dir = directory
        self.pg_port = pg_port
        self.sshd: subprocess.Popen[bytes] | None = None
        self.ssh: subprocess.Popen[bytes] | None = None
        self.local_port = 0

    def start(self) -> None:
        self.dir.mkdir(mode=0o700)
        for name in ("host_key", "user_key"):
            subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f",
                            str(self.dir / name)], check=True)
        shutil.copyfile(self.dir / "user_key.pub", self.dir / "authorized_keys")
        sshd_port = free_port()
        (self.dir / "sshd_config").write_text(f"""
Port {sshd_port}
ListenAddress {HOST}
HostKey {self.dir}/host_key
AuthorizedKeysFile {self.dir}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
""")
        os.makedirs("/run/sshd", exist_ok=True)
        with (self.dir / "sshd.log").open("wb") as log:
            self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                         stdout=subprocess.DEVNULL, stderr=log)
        host_key = (self.dir / "host_key.pub").read_text().split()
        (self.dir / "known_hosts").write_text(f"[{HOST}]:{sshd_port} {host_key[0]} "
                                              f"{host_key[1]}\n")
        (self.dir / "ssh_config").write_text(f"""
Host bastion
    HostName {HOST}
    Port {sshd_port}
    User root
    IdentityFile {self.dir}/user_key
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile {self.dir}/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    BatchMode yes
    LogLevel ERROR
    ControlMaster no
    ControlPath none
""")
        sshd = self.sshd
        wait_for(lambda: sshd.poll() is not None or port_open(sshd_port), 30.0,
                 f"sshd on port {sshd_port} (log {self.dir}/sshd.log)")
        if sshd.poll() is not None:
            raise SystemExit(f"sshd exited: {(self.dir / 'sshd.log').read_text()}")
        self.local_port = free_port()
        with (self.dir / "ssh.log").open("wb") as log:
            self.ssh = subprocess.Popen(
                [SSH, "-F", str(self.dir / "ssh_config"), "-N", "-o", "ExitOnForwardFailure=yes",
                 "-L", f"{HOST}:{self.local_port}:{HOST}:{self.pg_port}", "bastion"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        ssh = self.ssh
        wait_for(lambda: ssh.poll() is not None or port_open(self.local_port), 30.0,
                 f"ssh -L on port {self.local_port} (log {self.dir}/ssh.log)")
        if ssh.poll() is not None:
            raise SystemExit(f"ssh -L exited: {(self.dir / 'ssh.log').read_text()}")

    def cpu(self) -> float:
        """CPU seconds of the ssh client and the whole sshd tree."""
        return sum(tree_cpu(p.pid) for p in (self.ssh, self.sshd) if p is not None)

    def stop(self) -> None:
        stop_process(self.ssh)
        stop_process(self.sshd)


class LimenSide:
    """A ``limen start --roles auth,proxy,node,db`` cluster in front of ``pg``, a ``limen
    start --roles db`` agent apart, and alice with a PostgreSQL service for each database
    written by ``lmsh db login``."""

    def __init__(self, directory: Path, event_loop: str, *, diag: bool = False) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.event_loop = event_loop
        self.diag = diag
        config = self._config("cluster", "cluster")
        self.cluster = LimenCluster(directory / "cluster", CLUSTER,
                                    ["--roles", "auth,proxy,node,db", "-c", str(config)])
        self.agent: LimenCluster | None = None
        self.user: LimenUser | None = None
        self.server_prefix = directory / "server"

    def _config(self, name: str, served_by: str) -> Path:
        config = self.dir / f"{name}.yaml"
        config.write_text(f"event_loop: {self.event_loop}\n"
                          + (f"diag_addr: {HOST}:{free_port()}\n" if self.diag else "")
                          + f"db: {{resources: [{{labels: {{served-by: {served_by}}}}}]}}\n")
        return config

    def start_agent(self) -> None:
        """The db agent apart: joins with a token through the proxy's web port."""
        token = self.cluster.lmctl_json("tokens", "add", "--type", "db", "--ttl", "5m")
        self.agent = LimenCluster(self.dir / "agent", CLUSTER, [
            "--roles", "db", "-c", str(self._config("agent", "apart")),
            "--proxy", self.cluster.web, "--token", token["token"],
            "--ca-pin", token["ca_pin"]])
        self.agent.start()

    def start(self) -> None:
        self.cluster.start()
        self.cluster.lmctl("auth", "sign", "--format", "db", "--host", f"localhost,{HOST}",
                           "--out", self.server_prefix)

    def server_files(self) -> tuple[bytes, bytes, bytes]:
        """The database's certificate, key and the DB CA, from ``lmctl auth sign``."""
        cert, key, cas = (Path(f"{self.server_prefix}.{ext}").read_bytes()
                          for ext in ("crt", "key", "cas"))
        return cert, key, cas

    def log_in(self, pg_port: int) -> None:
        objects = self.dir / "objects.yaml"
        objects.write_text(limen_objects(pg_port))
        self.cluster.lmctl("apply", "-f", objects)
        self.user = self.cluster.signed_up_user(DB_USER, roles=["db-bench"])
        self.user.login()
        self.start_agent()
        lmsh = [command("lmsh"), "db"]
        wait_for(lambda: set(LIMEN_PATHS.values()) <= {d["name"] for d in json.loads(
            run([*lmsh, "ls", "-o", "json"], env=self.env).stdout)["items"]},
            30.0, "both db agents to heartbeat their database")
        for name in LIMEN_PATHS.values():
            run([*lmsh, "login", name, "--db-user", DB_USER, "--db-name", DB_NAME],
                env=self.env)

    @property
    def env(self) -> dict[str, str]:
        assert self.user is not None
        return client_env(self.user.env, HOME=str(self.user.home),
                          PGSERVICEFILE=str(self.user.home / ".pg_service.conf"))

    @property
    def pid(self) -> int:
        assert self.cluster.process is not None
        return self.cluster.process.pid

    def cpu(self) -> float:
        """CPU seconds of the cluster process and the agent apart."""
        return sum(tree_cpu(c.process.pid) for c in (self.cluster, self.agent)
                   if c is not None and c.process is not None and c.running)

    def stop(self) -> None:
        for process in (self.agent, self.cluster):
            if process is None:
                continue
            try:
                process.stop()
            except AssertionError as err:
                print(f"warning: {err}", file=sys.stderr)
                process.kill()


# ====================================================================== the benchmark


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.pg: PostgresServer | None = None
        self.bastion = Bastion(work / "bastion", 0)
        self.limen = LimenSide(work / "limen", args.event_loop,
                               diag=getattr(args, "diag", False))
        self.direct_conninfo = ""
        self.rows: dict[str, dict[str, list[float]]] = {p: {} for p in PATHS}
        self.cpu: dict[str, dict[str, list[float]]] = {p: {} for p in PATHS}
        self.other_busy: list[float] = []
        self.perf_text = ""

    # -------------------------------------------------------------- set-up

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with start_postgres(self.work / "postgres") as pg:
            self.pg = pg
            try:
                self._set_up(pg)
                yield
            finally:
                self.bastion.stop()
                self.limen.stop()

    def _set_up(self, pg: PostgresServer) -> None:
        self.limen.start()
        cert, key, cas = self.limen.server_files()
        client_ca, client_cert, client_key = write_client_ca(self.work)
        pg.configure_tls(cert, key, [cas, client_ca])
        pg.create_user(DB_USER)
        pg.create_database(DB_NAME, owner=DB_USER)
        pg.create_database(LOGGED_DB_NAME, owner=DB_USER)
        pg.sql(f"ALTER DATABASE {LOGGED_DB_NAME} SET log_statement = 'all'")
        self.direct_conninfo = (f"user={DB_USER} sslmode=verify-full "
                                f"sslrootcert={self.limen.server_prefix}.cas "
                                f"sslcert={client_cert} sslkey={client_key}")
        self.limen.log_in(pg.port)
        self.bastion.pg_port = pg.port
        self.bastion.start()
        print(f"set up: PostgreSQL on {pg.port}, bastion -L on {self.bastion.local_port}, "
              f"limen pid {self.limen.pid}; pgbench -i -s {self.args.scale}", flush=True)
        self.psql("direct", "create unlogged table if not exists bench_copy "
                            "(id bigint, n bigint, name text, pad text)")
        for path in ("direct", "bastion-log"):
            init = subprocess.run([PGBENCH, "-i", "-q", "-s", str(self.args.scale),
                                   self.conninfo(path)], env=self.env(path),
                                  capture_output=True, text=True, check=False)
            if init.returncode:
                raise SystemExit(f"{path}: pgbench -i failed:\n{init.stderr}")
        for path in PATHS:
            who = self.psql(path, "select current_user || '@' || current_database() || ' ' "
                                  "|| current_setting('log_statement')")
            logged = "all" if path == "bastion-log" else "none"
            if who.strip() != f"{DB_USER}@{db_name(path)} {logged}":
                raise SystemExit(f"{path}: connected as {who!r}")

    def conninfo(self, path: str) -> str:
        assert self.pg is not None
        if path == "direct":
            return f"host={HOST} port={self.pg.port} dbname={DB_NAME} {self.direct_conninfo}"
        if path in ("bastion", "bastion-log"):
            return (f"host={HOST} port={self.bastion.local_port} dbname={db_name(path)} "
                    f"{self.direct_conninfo}")
        return f"service={CLUSTER}-{LIMEN_PATHS[path]}"

    def env(self, path: str) -> dict[str, str]:
        return self.limen.env if path in LIMEN_PATHS else client_env()

    def psql(self, path: str, command_text: str) -> str:
        result = subprocess.run([PSQL, "-X", "-At", "-v", "ON_ERROR_STOP=1",
                                 self.conninfo(path), "-c", command_text],
                                env=self.env(path), capture_output=True, text=True, check=False)
        if result.returncode:
            raise SystemExit(f"{path}: psql -c {command_text!r} failed:\n{result.stderr}")
        return result.stdout

    # -------------------------------------------------------------- CPU accounting

    def cpu_snapshot(self) -> dict[str, float]:
        assert self.pg is not None
        own = os.times()
        postmaster = int((self.pg.data / "postmaster.pid").read_text().split()[0])
        return {"client": own.children_user + own.children_system,
                "self": own.user + own.system,
                "limen": self.limen.cpu(), "bastion": self.bastion.cpu(),
                "server": tree_cpu(postmaster), "busy": _util.system_busy()}

    def account(self, path: str, key: str, before: dict[str, float], seconds: float,
                per: float) -> dict[str, float]:
        """CPU used since ``before`` by the client, the middle and the server, ``per`` unit
        (e.g. per transaction); other processes' share is kept as CPUs busy."""
        after = self.cpu_snapshot()
        used = {k: after[k] - before[k] for k in after}
        known = sum(v for k, v in used.items() if k != "busy")
        self.other_busy.append(max(0.0, used["busy"] - known) / seconds)
        middle = used["limen"] if path in LIMEN_PATHS else 0.0 if path == "direct" \
            else used["bastion"]
        split = {"client": used["client"] / per, "middle": middle / per,
                 "server": used["server"] / per}
        for name, value in split.items():
            self.cpu[path].setdefault(f"{key} {name}", []).append(value)
        return split

    # -------------------------------------------------------------- measurements

    def pgbench(self, path: str, clients: int, perf: bool) -> None:
        logs = Path(tempfile.mkdtemp(prefix=f"{path}-{clients}-", dir=self.work))
        argv = [PGBENCH, "-n", "-S", "-c", str(clients), "-j", str(min(clients, 2)),
                "-T", str(self.args.duration), "-l", "--log-prefix", str(logs / "tx"),
                self.conninfo(path)]
        profiler = None
        threads_before = thread_cpu(self.limen.pid) if perf else {}
        before = self.cpu_snapshot()
        with _util.timed() as t:
            proc = subprocess.Popen(argv, env=self.env(path), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
            if perf:
                profiler = self._perf_start(logs)
            out, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{path}: pgbench -c {clients} failed:\n{out}{err}")
        latencies = transaction_latencies(logs)
        found = re.search(r"tps = ([0-9.]+)", out)
        if found is None or not latencies:
            raise SystemExit(f"{path}: no tps or no transaction log from pgbench:\n{out}{err}")
        tps = float(found.group(1))
        split = self.account(path, f"c{clients}", before, t.seconds, len(latencies))
        row = self.rows[path]
        row.setdefault(f"tps c{clients}", []).append(tps)
        row.setdefault(f"p50 c{clients}", []).append(_util.percentile(latencies, 50))
        row.setdefault(f"p99 c{clients}", []).append(_util.percentile(latencies, 99))
        print(f"pgbench -c {clients:<2} {path:<11} {tps:9.0f} tps, p50 "
              f"{row[f'p50 c{clients}'][-1]:.2f} ms, p99 {row[f'p99 c{clients}'][-1]:.2f} ms, "
              f"{len(latencies)} tx; CPU us/tx client {split['client'] * 1e6:.0f} middle "
              f"{split['middle'] * 1e6:.0f} server {split['server'] * 1e6:.0f}", flush=True)
        if profiler is not None:
            self._perf_finish(profiler, logs, threads_before, t.seconds)
        shutil.rmtree(logs, ignore_errors=True)

    def _perf_start(self, logs: Path) -> subprocess.Popen[bytes] | None:
        if shutil.which("perf") is None:
            print("perf is not installed: no profile", file=sys.stderr)
            return None
        with (logs / "perf.err").open("wb") as errors:
            return subprocess.Popen(["perf", "record", "-F", "499", "-p", str(self.limen.pid),
                                     "-o", str(logs / "perf.data"), "--",
                                     "sleep", str(max(1, self.args.duration - 1))],
                                    env=perf_env(), stdout=subprocess.DEVNULL, stderr=errors)

    def _perf_finish(self, profiler: subprocess.Popen[bytes], logs: Path,
                     threads_before: dict[str, float], seconds: float) -> None:
        profiler.wait()
        threads = thread_cpu(self.limen.pid)
        busy = sorted(((v - threads_before.get(k, 0.0), k) for k, v in threads.items()),
                      reverse=True)
        parts = ["limen threads, CPU seconds over the run of "
                 f"{seconds:.1f} s: " + ", ".join(f"{name} {cpu:.2f}" for cpu, name in busy[:6]
                                                  if cpu > 0)]
        for sort, count in (("pid,dso", 16), ("sym", 30)):
            report = subprocess.run(["perf", "report", "-i", str(logs / "perf.data"), "--stdio",
                                     "-q", "--sort", sort, "--percent-limit", "0.5"],
                                    env=perf_env(), capture_output=True, text=True,
                                    check=False)
            lines = [line.rstrip() for line in report.stdout.splitlines() if line.strip()]
            if not lines:
                lines = [f"(no samples: {report.stderr.strip()} / perf record: "
                         f"{(logs / 'perf.err').read_text(errors='replace').strip()})"]
            parts.append(f"perf report --sort {sort} (top {count}):\n" + "\n".join(lines[:count]))
        self.perf_text = "\n".join(parts)
        print(self.perf_text, flush=True)

    def copy(self, path: str, csv: Path) -> None:
        size = csv.stat().st_size
        out = self.work / "copy-out.csv"
        self.psql("direct", "truncate bench_copy")
        for key, command_text in (
                ("copy in", f"\\copy bench_copy from '{csv}' csv"),
                ("copy out", f"\\copy bench_copy to '{out}' csv")):
            before = self.cpu_snapshot()
            with _util.timed() as t:
                self.psql(path, command_text)
            self.account(path, key, before, t.seconds, size / 1e9)
            self.rows[path].setdefault(key, []).append(size / 1e6 / t.seconds)
            print(f"{key:<8} {path:<8} {size / 1e6 / t.seconds:7.1f} MB/s "
                  f"({t.seconds:.2f} s)", flush=True)
        if out.stat().st_size != size:
            raise SystemExit(f"{path}: \\copy to wrote {out.stat().st_size} bytes, not {size}")
        out.unlink()


def write_csv(path: Path, megabytes: int) -> None:
    """About ``megabytes`` x 10^6 bytes of ``id,n,name,pad`` rows (~100 bytes each)."""
    target, written, start = megabytes * 1_000_000, 0, 0
    with path.open("w") as out:
        while written < target:
            chunk = "".join(f"{i},{i * 7919 % 1000003},name-{i:012d},{PAD}\n"
                            for i in range(start, start + 10_000))
            out.write(chunk)
            written += len(chunk)
            start += 10_000


# ====================================================================== report


def transaction_latencies(logs: Path) -> list[float]:
    """Milliseconds of every transaction in the ``pgbench -l --log-prefix LOGS/tx`` logs."""
    return [int(line.split()[2]) / 1000
            for log in logs.glob("tx.*") for line in log.read_text().splitlines()]


def db_name(path: str) -> str:
    """The database ``path`` reaches: the logged copy for ``bastion-log``."""
    return LOGGED_DB_NAME if path == "bastion-log" else DB_NAME


def median(values: list[float]) -> float:
    return _util.percentile(values, 50)


def report(bench: Bench, facts: dict[str, str], end_load: str) -> str:
    rows, args = bench.rows, bench.args
    heads = ["measure", "direct", "bastion (ssh -L)", "bastion + statement log", "limen",
             "limen, agent apart", "limen / bastion", "agent apart / bastion",
             "limen / bastion + log", "limen / direct"]
    lines = ["| " + " | ".join(heads) + " |", "|---|" + "---:|" * (len(heads) - 1)]

    def add(label: str, key: str, fmt: str, show_rounds: bool = False) -> None:
        values = {p: median(rows[p][key]) for p in PATHS if key in rows[p]}
        if any(p not in values for p in COPY_PATHS):
            return
        cells = [fmt.format(values[p]) + (f" {[round(v) for v in rows[p][key]]}"
                                          if show_rounds and args.rounds > 1 else "")
                 if p in values else "-" for p in PATHS]
        logged = (f"{values['limen'] / values['bastion-log']:.2f}" if "bastion-log" in values
                  else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | "
                     f"{values['limen'] / values['bastion']:.2f} | "
                     f"{values['limen-apart'] / values['bastion']:.2f} | {logged} | "
                     f"{values['limen'] / values['direct']:.2f} |")

    for clients in args.clients:
        add(f"`pgbench -S` TPS, {clients} client{'s' if clients > 1 else ''}",
            f"tps c{clients}", "{:,.0f}", show_rounds=True)
        add(f"latency p50 ms, {clients}", f"p50 c{clients}", "{:.2f}")
        add(f"latency p99 ms, {clients}", f"p99 c{clients}", "{:.2f}")
    add(f"`\\copy from` (client → db) MB/s, {args.copy_mb} MB", "copy in", "{:.0f}",
        show_rounds=True)
    add(f"`\\copy to` (db → client) MB/s, {args.copy_mb} MB", "copy out", "{:.0f}",
        show_rounds=True)

    cpu_lines = []
    for key, unit, scale in [*((f"c{c}", "µs/transaction", 1e6) for c in args.clients),
                             ("copy in", "s/GB", 1.0), ("copy out", "s/GB", 1.0)]:
        if not any(f"{key} client" in bench.cpu[p] for p in PATHS):
            continue
        cells = []
        for path in PATHS:
            if f"{key} client" not in bench.cpu[path]:
                continue
            split = {part: median(bench.cpu[path].get(f"{key} {part}", [0.0])) * scale
                     for part in ("client", "middle", "server")}
            fmt = "{:.0f}" if scale > 1 else "{:.2f}"
            cells.append(f"{path} " + " + ".join(fmt.format(split[p]) for p in
                                                 ("client", "middle", "server")))
        label = key if key.startswith("copy") else f"pgbench -c {key[1:]}"
        cpu_lines.append(f"- CPU ({unit}), {label} (client + middle + PostgreSQL): "
                         + "; ".join(cells))

    top = max(args.clients)
    lim, apart, jump, logged, direct = (
        median(rows[p].get(f"tps c{top}", [float("nan")]))
        for p in ("limen", "limen-apart", "bastion", "bastion-log", "direct"))

    def met(ratio: float, bar: float) -> str:
        return "met" if ratio >= bar else "NOT met"

    verdict = (f"- target at {top} clients (limen / bastion TPS >= 1): one process "
               f"{lim / jump:.2f} ({met(lim / jump, 1)}), agent apart {apart / jump:.2f} "
               f"({met(apart / jump, 1)}); stretch (limen / direct >= 0.5): "
               f"{lim / direct:.2f} and {apart / direct:.2f}; for reference, against the "
               f"bastion with PostgreSQL's statement log: {lim / logged:.2f} and "
               f"{apart / logged:.2f}")
    other = max(bench.other_busy) if bench.other_busy else 0.0
    head = [f"### {time.strftime('%Y-%m-%d %H:%M')}", "",
            "machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), "",
            "command: `" + shlex.join([".venv/bin/python", "bench/bench_db.py", *sys.argv[1:]])
            + "`", "",
            f"load: loadavg {facts['loadavg']} at the start, {end_load} at the end; other "
            f"processes kept at most {other:.2f} of {facts['nproc']} CPUs busy during a "
            "measurement (median "
            f"{median(bench.other_busy) if bench.other_busy else 0.0:.2f})", ""]
    profile = (["", "Profile of the limen process (`--perf`):", "", "```", bench.perf_text,
                "```"] if bench.perf_text else [])
    return "\n".join([*head, *lines, "", verdict, *cpu_lines, *profile]) + "\n"


def record(text: str) -> None:
    """Append the run to the "## Databases (PostgreSQL)" section (created at the end of the
    file if missing), re-reading RESULTS.md right before writing."""
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
            [str(Path("/usr/lib/postgresql/15/bin/postgres")), "--version"],
            capture_output=True, text=True, check=False).stdout.split()[2]
    with contextlib.suppress(OSError, IndexError):
        out["openssh"] = subprocess.run([SSH, "-V"], capture_output=True, text=True,
                                        check=False).stderr.split(",")[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per pgbench run")
    parser.add_argument("--scale", type=int, default=5, help="pgbench -i -s SCALE")
    parser.add_argument("--clients", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 16], help="comma list of pgbench client counts")
    parser.add_argument("--copy-mb", type=int, default=200, help="size of the \\copy CSV")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds, the paths interleaved in each; the median is reported")
    parser.add_argument("--skip", default="", help="comma list of pgbench,copy")
    parser.add_argument("--perf", action="store_true",
                        help="perf record the limen process in its last run at most clients")
    parser.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop",
                        help="the limen process's event loop (limen.yaml event_loop)")
    parser.add_argument("--diag", action="store_true",
                        help="serve the limen process's metrics (limen.yaml diag_addr), so "
                             "every audit event written is counted as in production")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    facts = {**_util.machine_facts(), **versions()}
    _util.print_machine(facts)
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="limen-bench-db-"))
    try:
        bench = Bench(args, work)
        with bench.running():
            if "pgbench" not in skip:
                for round_no in range(args.rounds):
                    for clients in args.clients:
                        for path in PATHS:
                            bench.pgbench(path, clients, perf=args.perf and path == "limen"
                                          and clients == max(args.clients)
                                          and round_no == args.rounds - 1)
            if "copy" not in skip:
                csv = work / "rows.csv"
                write_csv(csv, args.copy_mb)
                for _ in range(args.rounds):
                    for path in COPY_PATHS:
                        bench.copy(path, csv)
                csv.unlink()
        end_load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        text = report(bench, facts, end_load)
        print()
        print(text)
        if args.record:
            record(text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
