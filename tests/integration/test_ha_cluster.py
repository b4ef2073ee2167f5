"""The HA cluster end to end under failures (issue #17, "Show it works"): 2 auth + 2 proxies + 3
node agents as separate ``limen start`` processes on one PostgreSQL database::

    lmsh ─▶ proxy 1 ─┐                  ┌─▶ auth A ─┐ (--gitops, same limen.yaml:
    lmsh ─▶ proxy 2 ─┴─▶ TCP balancer ──┴─▶ auth B ─┴─ PostgreSQL  backend, ca_key_file)
             ▲  ▲
    node-1, node-3 (--proxy proxy 1), node-2 (--proxy proxy 2)

The proxies reach the auth replicas through a TCP balancer (``tcp_failover``: a Service in
front of the replicas). Each node agent is started with one proxy's address and learns the
other from it (the proxy set that auth keeps), so it holds a tunnel to both. A load thread runs
logins and ``lmsh ssh NODE true`` to any node through either proxy while the test SIGKILLs the
auth replica holding the Git sync's lease (the next commit must be applied by the other within
10 s), restarts it, SIGKILLs proxy 1 (every node stays reachable through proxy 2, the nodes
given proxy 1 included) and restarts it (every node is reachable through it again). Every
operation either succeeds or fails cleanly (exit code 1 or 3 with one line on stderr and no
traceback; for ``ssh``, see ``SSH_CONNECT_FAILED``) and then succeeds on retry within 5 s, the
retry going through the other proxy as a client behind a load balancer would. No audit event is
lost: each successful login and session is found (by uid) in ``lmctl audit search`` of a
surviving auth.
"""

from __future__ import annotations

import contextlib
import getpass
import secrets
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
import yaml

from dbservers import PostgresServer
from gitops_git import WorkTree, bare, role
from ports import free_port

from .cluster import (
    LimenCluster,
    LimenUser,
    command,
    describe,
    earliest_safe_step,
    run,
    wait_for,
)
from .tcp_failover import TcpFailover

LOGIN = getpass.getuser()
DB_ROLE = "limen_ha_chaos"
RETRY_WITHIN = 5.0
"""The issue's promise: an operation that failed succeeds on retry this soon."""
TAKEOVER_DEADLINE = 10.0
"""The issue's promise: the next commit is applied this soon after the sync leader dies."""
OP_TIMEOUT = 20.0
SSH_CONNECT_FAILED = ("error: cannot reach the proxy at ", "lmsh: node ")
"""``lmsh ssh`` runs OpenSSH, so a connection that cannot be made ends as OpenSSH ends it: exit
255, Limen's one-line reason first (``error: cannot reach the proxy at ...`` from a proxy that
is down, ``lmsh: node 'x' is offline`` from one whose agents have not redialled it yet), then
OpenSSH's own closing lines. Accepted for ssh when the first line is Limen's reason."""
TOTP_STEP = 30
CHAOS_ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: chaos}
spec:
  allow:
    logins: ['{{internal.logins}}']
    node_labels: {'*': '*'}
"""
NODES_OF = {0: ("node-1", "node-3"), 1: ("node-2",)}
"""The proxy (by index) each node agent is started with; it learns the other from it."""
NODES = tuple(name for names in NODES_OF.values() for name in names)
USERS_OF = {0: ("ana", "bob", "cyd"), 1: ("dan", "eve", "fay")}
"""The users logged in at each proxy (lmsh keeps one profile per proxy)."""


def _private(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def _config(path: Path, tree: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


def _database(server: PostgresServer) -> str:
    """A fresh database owned by an ordinary role; its DSN."""
    server.create_user(DB_ROLE)
    server.sql(f"DROP DATABASE IF EXISTS {DB_ROLE} WITH (FORCE)")
    server.sql(f"CREATE DATABASE {DB_ROLE} OWNER {DB_ROLE}")
    return f"host={server.root} port={server.port} user={DB_ROLE} dbname={DB_ROLE}"


def _step() -> int:
    return int(time.time()) // TOTP_STEP


@dataclass
class Attempt:
    kind: str
    user: str
    proxy: int
    result: subprocess.CompletedProcess[str]

    @property
    def ok(self) -> bool:
        return self.result.returncode == 0

    @property
    def clean(self) -> bool:
        """A failure a person can read: exit 1 or 3, one line on stderr, no traceback."""
        err = self.result.stderr.strip()
        if "Traceback" in self.result.stdout + self.result.stderr or not err:
            return False
        if self.kind == "ssh" and self.result.returncode == 255:  # see SSH_CONNECT_FAILED
            return err.splitlines()[0].startswith(SSH_CONNECT_FAILED)
        return self.result.returncode in (1, 3) and "\n" not in err


@dataclass
class Operation:
    kind: str
    attempts: list[Attempt] = field(default_factory=list)
    retry_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.attempts) and self.attempts[-1].ok


@dataclass
class Cluster:
    root: Path
    auths: list[LimenCluster]
    proxies: list[LimenCluster]
    nodes: list[LimenCluster]
    users: dict[str, LimenUser]
    work: WorkTree
    pin: str
    last_step: dict[str, int] = field(default_factory=dict)
    """The last TOTP step each user spent (a code works once)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def proxy_of(self, name: str) -> int:
        return next(p for p, names in USERS_OF.items() if name in names)

    def lmsh(self, user: LimenUser, *args: str, input: str | None = None
             ) -> subprocess.CompletedProcess[str]:
        try:
            return run([command("lmsh"), *args], env=user.env, input=input, check=False,
                       timeout=OP_TIMEOUT)
        except subprocess.TimeoutExpired as err:  # an unclean failure, reported as such
            return subprocess.CompletedProcess(err.cmd, -1, "", f"timed out after {OP_TIMEOUT}s")

    def login(self, name: str) -> subprocess.CompletedProcess[str]:
        """``lmsh login`` of ``name`` at its proxy with a code of a step it never used."""
        user = self.users[name]
        with self.lock:
            step = max(earliest_safe_step(), self.last_step.get(name, -1) + 1)
            self.last_step[name] = step  # spent even if the login fails half-way
        assert user.totp_secret
        code = pyotp.TOTP(user.totp_secret).at(step * TOTP_STEP)
        return self.lmsh(user, "login", "--proxy", self.proxies[self.proxy_of(name)].web,
                         "--user", name, "--password-stdin", "--otp", code,
                         "--ca-pin", self.pin, input=user.password + "\n")

    def can_log_in(self, name: str) -> bool:
        """A code of an unused step is accepted now (the server allows one step ahead)."""
        with self.lock:
            return self.last_step.get(name, -1) + 1 <= _step() + 1

    def ssh(self, name: str, node: str) -> subprocess.CompletedProcess[str]:
        return self.lmsh(self.users[name], "ssh", f"{LOGIN}@{node}", "true")

    def live(self, auth: LimenCluster) -> str:
        return str((auth.lmctl_json("gitops", "status")["live"] or {}).get("sha", ""))

    def leader(self) -> LimenCluster:
        """The replica named in the Git sync's status (the lease holder that wrote it)."""
        holder = str(self.auths[0].lmctl_json("gitops", "status").get("leader", ""))
        for auth in self.auths:
            if holder.startswith((auth.data_dir / "host_uuid").read_text().strip() + "/"):
                return auth
        raise AssertionError(f"no replica holds the Git sync's lease (leader {holder!r})")

    def auth_addresses(self) -> list[str]:
        """Where the balancer sends connections: the auth replicas that are up."""
        addresses = []
        for auth in self.auths:
            with contextlib.suppress(OSError, ValueError, KeyError):
                if auth.running:
                    addresses.append(auth.auth)
        return addresses


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
            ) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("hachaos")
    proxy_token = secrets.token_hex(24)
    config = _config(root / "limen.yaml", {
        "backend": {"type": "postgres",
                    "dsn_file": str(_private(root / "backend.dsn", _database(postgres_server))),
                    "ca_key_file": str(_private(root / "ca.key", secrets.token_hex(32)))},
        "auth": {"proxy_token_file": str(_private(root / "proxy-token", proxy_token))},
    })
    remote = bare(root / "access.git")
    work = WorkTree(root / "work", remote)
    work.write("roles/chaos.yaml", CHAOS_ROLE)
    work.commit("chaos role")
    args = ["--roles", "auth", "-c", str(config), "--gitops", f"file://{remote}",
            "--gitops-interval", "1s"]
    auths = [LimenCluster(root / name, "ha", args) for name in ("auth-a", "auth-b")]
    state = Cluster(root, auths, [], [], {}, work, "")
    balancer = TcpFailover(state.auth_addresses)
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: _kill(*state.nodes, *state.proxies, *auths))
        stack.callback(balancer.close)
        for auth in auths:
            auth.start()
        balancer.start()
        state.pin = auths[0].status()["ca_fingerprints"]["tls"]
        auth_join = auths[0].listeners["auth_join"]
        for index in range(2):
            listeners = {name: f"127.0.0.1:{free_port()}" for name in ("web", "ssh_proxy",
                                                                       "tunnel")}
            listeners |= {name: "127.0.0.1:0" for name in ("postgres", "mysql", "kube")}
            name = f"proxy-{index + 1}"
            state.proxies.append(LimenCluster(root / name, "ha", [
                "--roles", "proxy", "-c", str(_config(root / f"{name}.yaml",
                                                      {"listeners": listeners})),
                "--auth-server", balancer.address, "--auth-join", auth_join,
                "--token", proxy_token, "--ca-pin", state.pin], random_ports=False))
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(LimenCluster.start, state.proxies))
            for index, names in NODES_OF.items():
                for name in names:
                    token = auths[0].lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
                    state.nodes.append(LimenCluster(root / name, "ha", [
                        "--roles", "node", "--nodename", name,
                        "--proxy", state.proxies[index].web, "--token", token["token"],
                        "--ca-pin", state.pin]))
            list(pool.map(LimenCluster.start, state.nodes))

            def sign_up(name: str) -> None:
                user = LimenUser(name, root / "users" / name,
                                 state.proxies[state.proxy_of(name)].web)
                user.signup(auths[0].add_user(name, ["chaos"], [LOGIN])["url"])
                state.users[name] = user
                state.last_step[name] = user.spent_step  # the step the sign-up spent
                tries: list[subprocess.CompletedProcess[str]] = []
                try:  # the first login may meet a proxy still connecting to auth
                    wait_for(lambda: _tried(tries, state.login(name)), RETRY_WITHIN,
                             f"the first login of {name}", interval=0.2)
                except AssertionError:
                    raise AssertionError(describe(tries[-1])) from None

            list(pool.map(sign_up, [n for names in USERS_OF.values() for n in names]))
        yield state
        for process in (*state.nodes, *state.proxies, *auths):
            if process.running:
                process.stop()


def _tried(tries: list[subprocess.CompletedProcess[str]],
           result: subprocess.CompletedProcess[str]) -> bool:
    tries.append(result)
    return result.returncode == 0


def _kill(*processes: LimenCluster) -> None:
    for process in processes:
        process.kill()


class Load:
    """Logins and ``lmsh ssh NODE true`` through either proxy, in a thread, until stopped."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.operations: list[Operation] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None
        self._turn = 0

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(3 * OP_TIMEOUT)

    def done(self, count: int) -> bool:
        if self.error is not None:
            raise AssertionError(f"the load loop failed: {self.error!r}")
        return len(self.operations) >= count

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                kind = "login" if self._turn % 2 else "ssh"
                self.operations.append(self._operation(kind, self._turn % 2 == 0))
                self._turn += 1
        except BaseException as err:  # reported by done()
            self.error = err

    def _attempt(self, kind: str, proxy: int) -> Attempt | None:
        """One try through ``proxy``; None when no user there may log in right now."""
        turn = self._turn
        if kind == "login":
            names = [n for n in USERS_OF[proxy] if self.cluster.can_log_in(n)]
            if not names:
                return None
            return Attempt(kind, names[0], proxy, self.cluster.login(names[0]))
        name = USERS_OF[proxy][turn % len(USERS_OF[proxy])]
        node = NODES[turn % len(NODES)]  # any node: every agent holds a tunnel to each proxy
        return Attempt(kind, name, proxy, self.cluster.ssh(name, node))

    def _operation(self, kind: str, first_proxy: bool) -> Operation:
        operation = Operation(kind)
        proxy = 0 if first_proxy else 1
        failed_at: float | None = None
        while True:
            attempt = self._attempt(kind, proxy)
            if attempt is None:
                kind = operation.kind = "ssh"  # nobody may log in at this step: a session
                continue
            operation.attempts.append(attempt)
            if attempt.ok:
                break
            failed_at = failed_at or time.monotonic()
            if time.monotonic() - failed_at > 2 * RETRY_WITHIN:
                break
            proxy = 1 - proxy  # retry through the other proxy, as behind a balancer
        if failed_at is not None:
            operation.retry_seconds = time.monotonic() - failed_at
        return operation


def _uids(auth: LimenCluster, event_type: str) -> dict[str, set[str]]:
    """The uids of successful ``event_type`` events per user, from ``auth``'s search."""
    found: dict[str, set[str]] = {}
    for event in auth.audit(event_type):
        if event.get("success") is not False:
            found.setdefault(str(event.get("user")), set()).add(str(event["uid"]))
    return found


def _new(after: dict[str, set[str]], before: dict[str, set[str]]) -> Counter[str]:
    return Counter({user: len(uids - before.get(user, set())) for user, uids in after.items()})


def _reachable(cluster: Cluster, user: str, node: str) -> Callable[[], bool]:
    return lambda: cluster.ssh(user, node).returncode == 0


@pytest.mark.timeout(300)  # about 90 s of scenario on a quiet machine (setup included)
def test_the_cluster_survives_killed_auth_and_proxy_replicas(cluster: Cluster) -> None:
    started = time.monotonic()
    a, b = cluster.auths
    logins_before, sessions_before = _uids(a, "user.login"), _uids(a, "session.start")
    takeover = 0.0
    with Load(cluster) as load:
        wait_for(lambda: load.done(4), 30.0, "the first operations")
        cluster.work.write("roles/load-1.yaml", role("load-1", "one"))
        first = cluster.work.commit("load-1 role")
        wait_for(lambda: cluster.live(a) == first, 10.0, "the first commit to be applied")

        leader = cluster.leader()
        survivor = b if leader is a else a
        leader.kill()  # SIGKILL: the lease is not given back
        killed = time.monotonic()
        cluster.work.write("roles/load-2.yaml", role("load-2", "two"))
        second = cluster.work.commit("load-2 role")
        wait_for(lambda: cluster.live(survivor) == second, TAKEOVER_DEADLINE,
                 "the surviving replica to apply the next commit", interval=0.2)
        takeover = time.monotonic() - killed
        syncs = [e for e in survivor.audit("gitops.sync") if e.get("sha") == second]
        assert syncs, "no gitops.sync event for the commit after the takeover"
        assert syncs[-1].get("success") is not False, syncs
        count = len(load.operations)
        wait_for(lambda: load.done(count + 2), 30.0, "operations while one auth is down")
        leader.start()

        count = len(load.operations)
        wait_for(lambda: load.done(count + 2), 30.0, "operations after the auth restart")
        dead = cluster.proxies[0]
        dead.kill()
        for node in NODES:  # every node stays reachable through the surviving proxy
            wait_for(_reachable(cluster, USERS_OF[1][0], node), RETRY_WITHIN,
                     f"{node} through the surviving proxy", interval=0.2)
        count = len(load.operations)
        wait_for(lambda: load.done(count + 2), 30.0, "operations while one proxy is down")
        dead.start()
        for node in NODES:  # and every agent dials the restarted proxy again
            wait_for(_reachable(cluster, USERS_OF[0][0], node), 30.0,
                     f"{node} through the restarted proxy", interval=0.5)
        count = len(load.operations)
        wait_for(lambda: load.done(count + 2), 30.0, "operations after the proxy restart")
    assert load.error is None, repr(load.error)

    operations = load.operations
    unclean = [a for o in operations for a in o.attempts if not a.ok and not a.clean]
    assert not unclean, "\n\n".join(describe(a.result) for a in unclean)
    failed = [o for o in operations if not o.ok]
    assert not failed, "\n\n".join(describe(o.attempts[-1].result) for o in failed)
    slow = [o.retry_seconds for o in operations if o.retry_seconds > RETRY_WITHIN]
    assert not slow, f"retries took {slow} s (more than {RETRY_WITHIN} s)"
    kinds = Counter(o.kind for o in operations)
    assert kinds["login"] >= 2, kinds
    assert kinds["ssh"] >= 4, kinds
    assert takeover <= TAKEOVER_DEADLINE

    # 0 audit events lost: every successful attempt is in the search of a surviving replica
    # (an attempt that failed at the client may still have been logged: at most one each)
    tried: dict[str, Counter[str]] = {"login": Counter(), "ssh": Counter()}
    made: dict[str, Counter[str]] = {"login": Counter(), "ssh": Counter()}
    for attempt in (a for o in operations for a in o.attempts):
        tried[attempt.kind][attempt.user] += 1
        made[attempt.kind][attempt.user] += attempt.ok
    auditor = cluster.auths[1] if cluster.auths[0] is leader else cluster.auths[0]

    def events_in(event_type: str, before: dict[str, set[str]], kind: str) -> bool:
        logged = _new(_uids(auditor, event_type), before)
        return all(made[kind][user] <= logged[user] for user in made[kind])

    wait_for(lambda: events_in("user.login", logins_before, "login"), 15.0,
             "a user.login event for every successful login", interval=0.5)
    wait_for(lambda: events_in("session.start", sessions_before, "ssh"), 20.0,
             "a session.start event for every successful session (nodes drain their outbox)",
             interval=0.5)
    logins = _new(_uids(auditor, "user.login"), logins_before)
    assert all(logins[u] <= tried["login"][u] for u in logins), (logins, tried["login"])
    assert time.monotonic() - started < 150.0
