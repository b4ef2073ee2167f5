"""Benchmark: ``lmctl gitops plan --access`` on 1,000 users x 10,000 resources, one core.

Builds an access repository (21 roles, 1,000 users each with their own ``logins`` trait, so
1,000 distinct role sets) in a real Git repository, and an inventory file with 10,000
resources (6,000 SSH nodes, 2,000 databases, 1,000 Kubernetes clusters, 1,000 apps; labels
env x team x region). The change under review gives the ``base`` role every user holds the
login ``root`` and widens its nodes from ``env=dev`` to ``env=dev|prod`` (of team ``t0``):
every user's access is evaluated again, before and after, and each gains ~300 grants.
Times the real command (pinned to one CPU with ``sched_setaffinity``) and, in process, the
access diff alone. Run: ``.venv/bin/python bench/bench_access_review.py [--users N
--resources N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _util

ENVS = ("dev", "staging", "prod")
TEAMS = tuple(f"t{i}" for i in range(20))
REGIONS = ("eu", "us", "ap", "sa")
GIT_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "LIMEN_"))},
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.com",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.com"}


def _doc(kind: str, name: str, spec: dict[str, object],
         labels: dict[str, str] | None = None) -> dict[str, object]:
    meta: dict[str, object] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "limen.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def _roles(root_login: bool) -> list[dict[str, object]]:
    base_logins = ["{{internal.logins}}"] + (["root"] if root_login else [])
    envs = ["dev", "prod"] if root_login else ["dev"]
    roles = [_doc("Role", "base", {"allow": {"logins": base_logins,
                                              "node_labels": {"env": envs, "team": "t0"}}})]
    for team in TEAMS:
        roles.append(_doc("Role", f"team-{team}", {"allow": {
            "logins": ["{{internal.logins}}", "ubuntu"],
            "node_labels": {"team": team, "env": ["dev", "staging"]},
            "db_labels": {"team": team}, "db_users": ["ro"],
            "kubernetes_labels": {"team": team}, "kubernetes_groups": ["devs"],
            "app_labels": {"team": team}}}))
    return roles


def _users(count: int) -> list[dict[str, object]]:
    return [_doc("User", f"u{i:04d}", {"roles": ["base", f"team-{TEAMS[i % len(TEAMS)]}"],
                                       "traits": {"logins": [f"u{i:04d}"]}})
            for i in range(count)]


def _inventory(count: int) -> dict[str, object]:
    kinds = [("ssh", 0.6), ("db", 0.2), ("kube", 0.1), ("app", 0.1)]
    objects: list[dict[str, object]] = []
    number = 0
    for kind, share in kinds:
        for _ in range(int(count * share)):
            labels = {"env": ENVS[number % 3], "team": TEAMS[(number // 3) % 20],
                      "region": REGIONS[(number // 60) % 4]}
            spec: dict[str, object] = {"kind": kind}
            objects.append(_doc("Resource", f"{kind}-{number:05d}", spec, labels))
            number += 1
    return {"kind": "Inventory", "version": 1, "objects": objects, "nodes": []}


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True)


def _write(repo: Path, users: int, root_login: bool) -> None:
    import yaml

    (repo / "access").mkdir(exist_ok=True)
    (repo / "access" / "roles.yaml").write_text(
        yaml.safe_dump_all(_roles(root_login), sort_keys=False), encoding="utf-8")
    (repo / "access" / "users.yaml").write_text(
        yaml.safe_dump_all(_users(users), sort_keys=False), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--resources", type=int, default=10000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    _util.print_machine()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        _git(repo, "init", "-q", "-b", "main")
        _write(repo, args.users, root_login=False)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", "base")
        _write(repo, args.users, root_login=True)
        inventory = Path(tmp) / "inventory.json"
        inventory.write_text(json.dumps(_inventory(args.resources)), encoding="utf-8")
        lmctl = str(Path(sys.executable).parent / "lmctl")
        started = time.perf_counter()
        result = subprocess.run(
            [lmctl, "gitops", "plan", str(repo / "access"), "--against", "main", "--access",
             "--inventory", str(inventory), "-o", "json"],
            capture_output=True, text=True, check=False, env=GIT_ENV)
        wall = time.perf_counter() - started
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)["access"]["summary"]
        print(f"lmctl gitops plan --access: {args.users} users x {args.resources} resources: "
              f"{wall:.2f} s wall (one core), {summary['added']} grants added, "
              f"{summary['risky']} risky")
        _in_process(repo, inventory)


def _in_process(repo: Path, inventory: Path) -> None:
    from limen.api.loader import load_path
    from limen.api.resources import Origin
    from limen.api.validation import validate
    from limen.gitops.access_diff import AccessState, access_diff, after_objects
    from limen.gitops.access_diff_inventory import read_inventory
    from limen.gitops.repository import documents_at_ref

    known, nodes = read_inventory(inventory)
    before = known + [r.with_origin(Origin.GIT)
                      for r in validate(documents_at_ref(repo / "access", "main"))]
    desired = [r.with_origin(Origin.GIT) for r in validate(load_path(repo / "access"))]
    after = after_objects(before, desired, Origin.GIT.value)
    started = time.perf_counter()
    diff = access_diff(AccessState.build(before, nodes), AccessState.build(after, nodes))
    print(f"access diff alone (in process): {time.perf_counter() - started:.2f} s, "
          f"{len(diff.changes)} changes")


if __name__ == "__main__":
    main()
