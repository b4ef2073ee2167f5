"""Certificate issuance benchmark: Limen's CA and login path next to the direct alternatives.

Run by hand (not by the test suite); prints, for this machine, side by side:

1. raw Ed25519 signatures/s of ``cryptography`` (one core, tight loop): the ceiling;
2. SSH user and X.509 client certificates/s from ``limen.ca`` in-process (one core);
3. ``ssh-keygen -s CA -I id -n principals -V +1h key.pub``, one process per key, as a team
   scripting OpenSSH would: sequentially, and ``nproc`` at a time;
4. logins/s through the real path: a ``limen start --random-ports
   --insecure-second-factor-off`` subprocess (no TOTP step limits the rate), users created
   through the auth API with the admin identity and signed up through the proxy's
   ``/v1/webapi/signup``; then C concurrent clients (one HTTPS connection each) POST
   ``/v1/webapi/login`` with a fresh Ed25519 public key per login. Each login verifies an
   Argon2id password (~100 ms of one core, by design) and issues one SSH + one X.509 cert;
5. ``AuthServer.issue_for_user`` in-process on the real SQLite backend and audit log (user
   lookup, roles, RBAC, both signatures, the ``cert.create`` event), C asyncio tasks: the
   issuance rate without the password check.

    .venv/bin/python bench/bench_signing.py [--logins N] [--concurrency C] [--users U]

Sections 1-2 reuse ``bench_signing_raw.py`` (the CA's micro-benchmark, which also has the
verify rates). Results are recorded in ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _util
from bench_signing_raw import IDENTITY, TTL, rate
from cryptography import x509

from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin
from limen.api.validation import validate
from limen.auth.client import AuthClient
from limen.auth.core import AuthServer
from limen.auth.credentials import passwords
from limen.auth.credentials.signup_tokens import parse_signup_url
from limen.backend.factory import open_backend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.keys import generate_private_key, private_key_to_openssh, public_key_to_openssh
from limen.ca.ssh_certs import parse_ssh_cert, sign_user_cert
from limen.ca.x509_certs import sign_client_cert
from limen.client.webapi import WebApi
from limen.config import ClusterSettings
from limen.events.filelog import FileLog

PASSWORD = "bench-password-0123456789"
ROLE = {
    "apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "bench"},
    "spec": {"options": {"max_session_ttl": "8h"},
             "allow": {"logins": ["{{internal.logins}}", "ubuntu"],
                       "node_labels": {"env": ["dev", "staging"]},
                       "kubernetes_groups": ["developers"], "kubernetes_labels": {"env": "dev"}},
             "deny": {"node_labels": {"env": "prod"}}},
}


def user_doc(name: str) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "User", "metadata": {"name": name},
            "spec": {"roles": ["bench"], "traits": {"logins": [name]}}}


def public_keys(count: int) -> list[str]:
    return [public_key_to_openssh(generate_private_key().public_key()) for _ in range(count)]


Row = tuple[str, float, str]


# ---------------------------------------------------------------------- 1-2: in-process CA


def ca_rates(keys: int, seconds: float) -> list[Row]:
    user_ca = CertAuthority.generate("root", CertAuthorityType.USER)
    tls_ca = CertAuthority.generate("root", CertAuthorityType.TLS)  # P-256, as a cluster's
    subjects = itertools.cycle([generate_private_key().public_key() for _ in range(keys)])
    message = os.urandom(400)
    ed = user_ca.signer
    return [
        ("raw Ed25519 sign (cryptography)", rate(lambda: ed.sign(message), seconds),
         "signatures/s, 1 core: the ceiling"),
        ("SSH user cert, limen.ca in-process",
         rate(lambda: sign_user_cert(user_ca, next(subjects), IDENTITY, TTL), seconds),
         "certs/s, 1 core, Ed25519 user CA"),
        ("X.509 client cert, limen.ca in-process",
         rate(lambda: sign_client_cert(tls_ca, next(subjects), IDENTITY, TTL), seconds),
         "certs/s, 1 core, P-256 TLS CA"),
    ]


# ---------------------------------------------------------------------- 3: ssh-keygen


def ssh_keygen_rates(keys: int, workers: int) -> list[Row]:
    user_ca = CertAuthority.generate("root", CertAuthorityType.USER)
    with tempfile.TemporaryDirectory(prefix="limen-bench-keygen-") as tmp:
        ca_path = Path(tmp) / "user_ca"
        ca_path.write_text(private_key_to_openssh(user_ca.signer), encoding="utf-8")
        ca_path.chmod(0o600)
        paths = []
        for i, line in enumerate(public_keys(2 * keys)):
            path = Path(tmp) / f"key{i}.pub"
            path.write_text(line + "\n", encoding="utf-8")
            paths.append(path)

        def sign(path: Path) -> None:
            subprocess.run(["ssh-keygen", "-q", "-s", str(ca_path), "-I", "user:alice",
                            "-n", "alice,ubuntu", "-V", "+1h", str(path)],
                           check=True, capture_output=True)

        with _util.timed() as serial:
            for path in paths[:keys]:
                sign(path)
        with ThreadPoolExecutor(workers) as pool, _util.timed() as parallel:
            list(pool.map(sign, paths[keys:]))
        cert = parse_ssh_cert(paths[0].with_name("key0-cert.pub").read_bytes())
        if cert.valid_principals != [b"alice", b"ubuntu"]:
            raise RuntimeError(f"ssh-keygen signed {cert.valid_principals}")
    return [
        ("ssh-keygen -s, one process per key", _util.per_second(keys, serial.seconds),
         f"keys/s, {keys} keys, one after another"),
        (f"ssh-keygen -s, {workers} at a time", _util.per_second(keys, parallel.seconds),
         f"keys/s, {keys} keys, all cores"),
    ]


def argon2_rate(count: int = 5) -> Row:
    stored = passwords.hash_password(PASSWORD)
    with _util.timed() as t:
        for _ in range(count):
            if not passwords.verify_password(stored, PASSWORD).ok:
                raise RuntimeError("Argon2id verify failed")
    return ("Argon2id verify (DEFAULT_PARAMS)", _util.per_second(count, t.seconds),
            f"verifies/s, 1 core ({1000 * t.seconds / count:.0f} ms each)")


# ---------------------------------------------------------------------- 4: end-to-end logins


@dataclass
class LoginRun:
    logins: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    """CPU seconds of the limen process during the timed logins."""
    server_loop_cpu: float
    """... of which its main thread (the event loop: HTTP, TLS, JSON, store, signing)."""
    client_cpu: float
    other_cpu: float
    """CPU seconds used meanwhile by every other process on the machine."""


async def e2e_logins(cluster: _util.Cluster, users: int, logins: int,
                     concurrency: int) -> LoginRun:
    admin = AuthClient(cluster.auth, HostCredentials.load(cluster.data_dir / "admin"))
    try:
        await admin.apply([ROLE])
        links = [await admin.call("POST", "/v1/users", {
            "name": f"bench{i}", "roles": ["bench"], "logins": [f"bench{i}"]})
            for i in range(users)]
    finally:
        await admin.close()
    pin = parse_signup_url(links[0]["url"]).ca_pin
    clients = [(await WebApi.connect(cluster.web, ca_pin=pin))[0] for _ in range(concurrency)]
    try:
        await asyncio.gather(*(clients[i % concurrency].signup(link["token"], PASSWORD, None)
                               for i, link in enumerate(links)))
        keys = public_keys(logins + concurrency)
        warm = await asyncio.gather(*(api.login(f"bench{i % users}", PASSWORD, "", keys[i],
                                                None) for i, api in enumerate(clients)))
        cert = parse_ssh_cert(warm[0]["ssh_cert"])
        if cert.valid_principals != [b"bench0", b"ubuntu"]:
            raise RuntimeError(f"login certificate principals: {cert.valid_principals}")
        x509.load_pem_x509_certificate(warm[0]["tls_cert"].encode())
        todo = iter(range(concurrency, concurrency + logins))
        latencies: list[float] = []

        async def client(index: int, api: WebApi) -> None:
            user = f"bench{index % users}"  # users >= concurrency: no two clients share one
            for n in todo:
                start = time.perf_counter()
                answer = await api.login(user, PASSWORD, "", keys[n], None)
                latencies.append(time.perf_counter() - start)
                if not (answer["ssh_cert"] and answer["tls_cert"]):
                    raise RuntimeError(f"login {n} returned no certificates")

        pid = cluster.process.pid
        before = (_util.process_cpu(pid), _util.process_cpu(pid, pid), _own_cpu(),
                  _util.system_busy())
        with _util.timed() as t:
            await asyncio.gather(*(client(i, api) for i, api in enumerate(clients)))
        server, loop, own, busy = (
            now - then for now, then in zip((_util.process_cpu(pid), _util.process_cpu(pid, pid),
                                             _own_cpu(), _util.system_busy()), before,
                                            strict=True))
        return LoginRun(len(latencies), t.seconds, latencies, server, loop, own,
                        max(0.0, busy - server - own))
    finally:
        for api in clients:
            await api.close()


def _own_cpu(children: bool = False) -> float:
    times = os.times()
    extra = times.children_user + times.children_system if children else 0.0
    return times.user + times.system + extra


# ---------------------------------------------------------------------- 5: issue_for_user


async def issue_in_process(count: int, users: int, concurrency: int) -> tuple[float, float]:
    """(certificate pairs/s, CPU seconds per pair) of ``AuthServer.issue_for_user``."""
    with tempfile.TemporaryDirectory(prefix="limen-bench-issue-") as tmp:
        backend = open_backend(Path(tmp))
        log = FileLog(Path(tmp) / "events")
        try:
            server = AuthServer(backend, ClusterSettings(name="bench"), log)
            await server.start()
            docs = [ROLE, *(user_doc(f"bench{i}") for i in range(users))]
            await server.apply(validate([SourceDocument("<bench>", i, 1, d)
                                         for i, d in enumerate(docs)]), Origin.API,
                               actor="bench")
            keys = public_keys(count + users)
            for i in range(users):  # warm-up, untimed: first lookups, caches
                await server.issue_for_user(await server.store.get(Kind.USER, f"bench{i}"),
                                            keys[i], None)
            todo = iter(range(users, users + count))

            async def worker(index: int) -> None:
                name = f"bench{index % users}"
                for n in todo:
                    user = await server.store.get(Kind.USER, name)
                    certs = await server.issue_for_user(user, keys[n], None)
                    if not (certs.ssh_cert and certs.tls_cert):
                        raise RuntimeError(f"issue {n} returned no certificates")

            cpu0 = _own_cpu()
            with _util.timed() as t:
                await asyncio.gather(*(worker(i) for i in range(concurrency)))
            return _util.per_second(count, t.seconds), (_own_cpu() - cpu0) / count
        finally:
            log.close()
            await backend.close()


# ---------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=300, help="timed logins (end-to-end)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients/tasks")
    parser.add_argument("--users", type=int, help="users to log in as (default: concurrency)")
    parser.add_argument("--keys", type=int, default=300, help="keys signed by ssh-keygen")
    parser.add_argument("--issues", type=int, default=3000,
                        help="issue_for_user calls (in-process)")
    parser.add_argument("--seconds", type=float, default=1.0, help="per in-process CA rate")
    args = parser.parse_args()
    users = max(args.users or args.concurrency, args.concurrency)
    nproc = os.cpu_count() or 1

    _util.print_machine()
    start_busy, start_own, start = _util.system_busy(), _own_cpu(children=True), time.monotonic()
    print("\n[1-2] in-process signing ...", flush=True)
    rows = ca_rates(args.keys, args.seconds)
    print("[3]   ssh-keygen ...", flush=True)
    rows += ssh_keygen_rates(args.keys, nproc)
    rows.append(argon2_rate())
    print(f"[4]   end-to-end: limen start, {users} users, {args.logins} logins, "
          f"{args.concurrency} clients ...", flush=True)
    with _util.running_cluster("--insecure-second-factor-off") as cluster:
        run = asyncio.run(e2e_logins(cluster, users, args.logins, args.concurrency))
    login_rate = _util.per_second(run.logins, run.seconds)
    rows += [
        ("logins via proxy /v1/webapi/login", login_rate,
         f"logins/s, {args.concurrency} clients, all cores"),
        ("  = certificates issued", 2 * login_rate, "certs/s (1 SSH + 1 X.509 per login)"),
    ]
    print(f"[5]   AuthServer.issue_for_user x {args.issues}, {args.concurrency} tasks ...",
          flush=True)
    pairs, cpu_per_pair = asyncio.run(issue_in_process(args.issues, users, args.concurrency))
    rows += [
        ("issue_for_user in-process (no password)", pairs,
         f"cert pairs/s, 1 event loop; {1000 * cpu_per_pair:.2f} CPU-ms per pair"),
        ("  = certificates issued", 2 * pairs, "certs/s"),
    ]

    print()
    _util.print_table(["path", "per second", "unit, conditions"], rows)
    p50, p99 = (1000 * _util.percentile(run.latencies, p) for p in (50, 99))
    per_login = {name: f"{1000 * value / run.logins:.1f} ms" for name, value in (
        ("server", run.server_cpu), ("loop", run.server_loop_cpu),
        ("client", run.client_cpu), ("other", run.other_cpu))}
    print(f"\nlogin latency: p50 {p50:.0f} ms, p99 {p99:.0f} ms over {run.logins} logins "
          f"({run.seconds:.1f} s)\nCPU per login: limen process {per_login['server']} "
          f"(event-loop thread {per_login['loop']}, the rest is worker threads: Argon2id, "
          f"SQLite, audit log); benchmark client {per_login['client']}; other processes "
          f"{per_login['other']} ({run.other_cpu / run.seconds:.2f} of {nproc} cpus busy "
          "with something else)")
    print("note: the cluster runs with --insecure-second-factor-off so no TOTP step (one code "
          "per 30 s per user) limits the rate;\n      each login verifies an Argon2id "
          "password (~100 ms of one core by design), which bounds logins/s near "
          f"{nproc} cpus / verify time.")
    other = (_util.system_busy() - start_busy) - (_own_cpu(children=True) - start_own)
    print(f"background: other processes kept {max(0.0, other) / (time.monotonic() - start):.2f} "
          f"of {nproc} cpus busy over the whole run (re-run if this is not near 0)")


if __name__ == "__main__":
    main()
