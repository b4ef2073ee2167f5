"""GitOps benchmark: how fast a commit takes effect, and how fast a big repository syncs.

Run by hand (not by the test suite). Two parts:

a) **Commit → effective latency**, end to end: a real ``limen start --gitops file://BARE
   --gitops-interval 1s --insecure-second-factor-off`` subprocess syncs from a local bare
   repository. A user ``bench`` (declared in Git, signed up through the proxy) holds role
   ``bench``. For each of N commits the script changes the role's logins to a new value,
   starts the clock, runs ``git commit`` + ``git push``, then logs in through the proxy's
   ``/v1/webapi/login`` in a loop until the issued certificate carries the new login. Before
   each commit it waits a random part of the interval, so commits land at every phase of the
   poll. Reported: p50, p90, p99, max (target: < 2 s at a 1 s interval). One login costs an
   Argon2id verification (~0.1 s), which bounds the resolution; it is printed too.

b) **Cold sync and resync of a big repository**, in-process on the real components (SQLite
   backend, fsynced audit log, ``GitOpsSync``): a repository of R roles and U users (one file
   each) is synced into an empty data directory (fetch, read at the commit, validate, plan,
   one transaction, one audit event per object); then a forced resync of the same commit
   (read, validate, plan: nothing to write), a poll with no new commit, and a commit that
   changes one role. Target: 10,000 objects validated and applied in < 10 s.

    .venv/bin/python bench/bench_gitops.py [--commits 50] [--roles 5000] [--users 5000]
                                           [--skip-latency] [--skip-bulk] [--record]

``--record`` appends the figures, the machine and the command to ``bench/RESULTS.md`` under
"## GitOps".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _util

from limen.auth.client import AuthClient
from limen.auth.core import AuthServer
from limen.auth.credentials.signup_tokens import parse_signup_url
from limen.backend.factory import open_backend
from limen.ca.host_credentials import HostCredentials
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.client.webapi import WebApi
from limen.config import ClusterSettings, GitOpsSettings, Settings
from limen.events.filelog import FileLog
from limen.gitops.sync import GitOpsSync, Outcome

PASSWORD = "bench-password-0123456789"
INTERVAL = 1.0
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_HEADER = """\
# Benchmark results

Figures measured with the scripts in `bench/` (see bench/README.md). Each section records the
exact command that produced it and the machine it ran on; re-run that command to compare.
"""
GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "LIMEN_"))},
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.com",
}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True,
                          check=True).stdout.strip()


def new_repo(base: Path) -> tuple[Path, Path]:
    """A bare repository and a work tree that pushes to it."""
    remote, work = base / "access.git", base / "work"
    remote.mkdir(parents=True)
    work.mkdir()
    git(remote, "init", "--quiet", "--bare", "--initial-branch=main")
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "remote", "add", "origin", str(remote))
    return remote, work


def commit_and_push(work: Path, message: str) -> None:
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "-m", message)
    git(work, "push", "--quiet", "origin", "HEAD:refs/heads/main")


def role_yaml(name: str, logins: list[str]) -> str:
    return f"""\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata:
  name: {name}
  labels: {{team: platform}}
spec:
  options: {{max_session_ttl: 8h, forward_agent: false, client_idle_timeout: 30m}}
  allow:
    logins: [{", ".join(["'{{internal.logins}}'", *logins])}]
    node_labels: {{env: [dev, staging], team: '{{{{external.team}}}}'}}
    db_labels: {{env: dev}}
    db_users: ['{{{{internal.db_users}}}}']
    kubernetes_groups: [developers]
  deny:
    node_labels: {{env: prod}}
"""


def user_yaml(name: str, role: str) -> str:
    return f"""\
apiVersion: limen.dev/v1alpha1
kind: User
metadata:
  name: {name}
spec:
  roles: [{role}]
  traits: {{logins: [{name}], team: [platform], db_users: [{name}]}}
"""


# ---------------------------------------------------------------------- a) latency


async def latency(commits: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="limen-bench-gitops-"))
    remote, work = new_repo(base)
    (work / "roles").mkdir()
    (work / "users").mkdir()
    (work / "roles" / "bench.yaml").write_text(role_yaml("bench", ["l0"]), encoding="utf-8")
    (work / "users" / "bench.yaml").write_text(user_yaml("bench", "bench"), encoding="utf-8")
    commit_and_push(work, "bench role and user")
    with _util.running_cluster("--insecure-second-factor-off", "--gitops", f"file://{remote}",
                               "--gitops-interval", f"{INTERVAL:g}s") as cluster:
        async with AuthClient(cluster.auth,
                              HostCredentials.load(cluster.data_dir / "admin")) as admin:
            link = await admin.call("POST", "/v1/users/bench/invite", {"ttl_seconds": 600})
        api, _ = await WebApi.connect(cluster.web, ca_pin=parse_signup_url(link["url"]).ca_pin)
        try:
            await api.signup(link["token"], PASSWORD)
            key = public_key_to_openssh(generate_private_key().public_key())
            samples, login_times, polls = [], [], 0
            for index in range(1, commits + 1):
                await asyncio.sleep(random.uniform(0, INTERVAL))  # any phase of the poll
                login = f"l{index}"
                (work / "roles" / "bench.yaml").write_text(role_yaml("bench", [login]),
                                                           encoding="utf-8")
                start = time.perf_counter()
                await asyncio.to_thread(commit_and_push, work, f"login {login}")
                while True:
                    before = time.perf_counter()
                    answer = await api.login("bench", PASSWORD, "", key, None)
                    login_times.append(time.perf_counter() - before)
                    polls += 1
                    if login in answer["logins"]:
                        break
                samples.append(time.perf_counter() - start)
        finally:
            await api.close()
    return {
        "commits": commits, "p50": _util.percentile(samples, 50),
        "p90": _util.percentile(samples, 90), "p99": _util.percentile(samples, 99),
        "max": max(samples), "min": min(samples),
        "login_p50": _util.percentile(login_times, 50), "logins": polls,
    }


# ---------------------------------------------------------------------- b) bulk sync


async def bulk(roles: int, users: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="limen-bench-gitops-bulk-"))
    remote, work = new_repo(base)
    (work / "roles").mkdir()
    (work / "users").mkdir()
    for i in range(roles):
        (work / "roles" / f"r{i:05d}.yaml").write_text(role_yaml(f"r{i:05d}", [f"l{i}"]),
                                                      encoding="utf-8")
    for i in range(users):
        (work / "users" / f"u{i:05d}.yaml").write_text(
            user_yaml(f"u{i:05d}", f"r{i % max(roles, 1):05d}"), encoding="utf-8")
    commit_and_push(work, f"{roles} roles, {users} users")

    data_dir = base / "data"
    backend = open_backend(data_dir)
    log = FileLog(data_dir / "log" / "events")
    figures: dict[str, Any] = {"objects": roles + users}
    try:
        auth = AuthServer(backend, ClusterSettings(name="bench"), log)
        await auth.start()
        sync = GitOpsSync(Settings(data_dir=data_dir, gitops=GitOpsSettings(
            source=str(remote), interval_seconds=INTERVAL)), auth)

        async def measure(name: str, action: Callable[[], Any], expect: Outcome) -> None:
            start, cpu = time.perf_counter(), time.process_time()
            report = await action()
            figures[name] = time.perf_counter() - start
            figures[f"{name}_cpu"] = time.process_time() - cpu
            assert report.outcome is expect, (name, report.outcome, report.errors[:3])
            figures[f"{name}_summary"] = report.plan.summary() if report.plan else "-"

        await measure("cold", sync.sync_once, Outcome.APPLIED)
        await measure("resync", lambda: sync.sync_once(force=True), Outcome.APPLIED)
        await measure("poll", sync.sync_once, Outcome.UNCHANGED)
        (work / "roles" / "r00000.yaml").write_text(role_yaml("r00000", ["changed"]),
                                                    encoding="utf-8")
        commit_and_push(work, "one role changes")
        await measure("one_change", sync.sync_once, Outcome.APPLIED)
        await sync.stop()
    finally:
        log.close()
        await backend.close()
    return figures


# ---------------------------------------------------------------------- output

BULK_STEPS = (
    ("cold", "cold sync (fetch, read, validate, plan, apply, events)"),
    ("resync", "forced resync of the same commit"),
    ("poll", "poll, no new commit"),
    ("one_change", "commit changing one role"),
)


def report(lat: dict[str, Any] | None, big: dict[str, Any] | None) -> list[str]:
    lines = []
    if lat:
        lines += [
            f"a) commit → new certificate carries the change, {lat['commits']} commits, "
            f"poll interval {INTERVAL:g} s (target p99 < 2 s):",
            "",
            "| p50 | p90 | p99 | max | min | one login (p50) |",
            "|---|---|---|---|---|---|",
            f"| {lat['p50']:.2f} s | {lat['p90']:.2f} s | {lat['p99']:.2f} s | "
            f"{lat['max']:.2f} s | {lat['min']:.2f} s | {lat['login_p50'] * 1000:.0f} ms |",
            "",
        ]
    if big:
        lines += [
            f"b) a repository of {big['objects']:,} objects (one file each), in-process on "
            "SQLite with the fsynced audit log (target: cold sync < 10 s):",
            "",
            "| step | wall | CPU (this process) | plan |",
            "|---|---|---|---|",
            *(f"| {label} | {big[key]:.2f} s | {big[key + '_cpu']:.2f} s | "
              f"{big[key + '_summary']} |" for key, label in BULK_STEPS),
            "",
        ]
    return lines


def record(lines: list[str], start_load: str) -> None:
    facts = _util.machine_facts()
    facts["loadavg"] = f"{start_load} at the start, {facts['loadavg']} at the end"
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", "bench/bench_gitops.py",
                                                *sys.argv[1:]])
    block = ["## GitOps", "", f"Command: `{command}`", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), "",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "", *lines]
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else RESULTS_HEADER
    RESULTS.write_text(text.rstrip("\n") + "\n\n" + "\n".join(block).rstrip("\n") + "\n",
                       encoding="utf-8")
    print(f"recorded in {RESULTS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=50)
    parser.add_argument("--roles", type=int, default=5000)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-bulk", action="store_true")
    parser.add_argument("--record", action="store_true",
                        help="append the figures to bench/RESULTS.md")
    args = parser.parse_args()
    _util.print_machine()
    start_load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    lat = None if args.skip_latency else asyncio.run(latency(args.commits))
    big = None if args.skip_bulk else asyncio.run(bulk(args.roles, args.users))
    lines = report(lat, big)
    print("\n".join(lines))
    if args.record:
        record(lines, start_load)


if __name__ == "__main__":
    main()
