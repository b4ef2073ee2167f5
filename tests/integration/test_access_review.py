"""``lmctl gitops plan --access``: the access review of a pull request, on real Git repositories.

Each test commits a base state of an access repository, changes the work tree the way a pull
request would, and runs the real ``lmctl gitops plan PATH --against main --access`` (text and
JSON), asserting the exact lines. One test starts a cluster, exports its inventory, reviews a
change against that file alone, and checks reported grants with ``lmctl access check`` on the
cluster running the new state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gitops_git import WorkTree

from .cluster import ClusterFactory, clean_env, command, run, wait_for

BASE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: ops}
spec:
  allow:
    logins: ["{{internal.logins}}"]
    node_labels: {env: prod}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: contractor}
spec:
  allow:
    db_labels: {env: prod}
    db_users: [postgres]
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: admin}
spec:
  allow:
    rules: [{resources: [role, user], verbs: ["*"]}]
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {name: alice}
spec: {roles: [ops], traits: {logins: [alice]}}
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {name: bob}
spec: {roles: [contractor]}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {name: prod-db-1, labels: {env: prod}}
spec: {kind: ssh, hostname: prod-db-1, address: "10.0.0.1:22"}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {name: dev-1, labels: {env: dev}}
spec: {kind: ssh, hostname: dev-1, address: "10.0.0.2:22"}
---
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {name: billing, labels: {env: prod}}
spec: {kind: db, protocol: postgres, address: "db:5432"}
---
apiVersion: limen.dev/v1alpha1
kind: TrustedCluster
metadata: {name: corp}
spec:
  enabled: false
  proxy_address: corp.example.com:3080
  token_secret_ref: {file: corp.token}
  role_map: [{remote: dev, local: [ops]}]
"""


def _repo(tmp_path: Path) -> WorkTree:
    work = WorkTree(tmp_path / "repo")
    work.write("access/all.yaml", BASE)
    work.commit("base", push=False)
    return work


def _plan(work: WorkTree, *args: str, code: int = 0) -> Any:
    result = run([command("lmctl"), "gitops", "plan", work.path / "access", "--against",
                  "main", "--access", *args], env=clean_env(), check=False)
    assert result.returncode == code, result.stdout + result.stderr
    return result.stdout


def _access_lines(text: str) -> list[str]:
    return text.split("\n\n", 1)[1].splitlines()


def _change(work: WorkTree, old: str, new: str) -> None:
    path = work.path / "access" / "all.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_a_login_added_to_a_role(tmp_path: Path) -> None:
    work = _repo(tmp_path)
    _change(work, 'logins: ["{{internal.logins}}"]', 'logins: ["{{internal.logins}}", ubuntu]')
    assert _access_lines(_plan(work)) == [
        "+ alice  ssh ubuntu@prod-db-1  (role ops: allow.logins, node_labels env=prod)",
        "Access: 1 grant added, 0 removed, 1 user; 0 risky",
    ]
    document = json.loads(_plan(work, "-o", "json"))
    assert document["valid"] is True
    assert document["access"]["changes"] == [{
        "sign": "+", "user": "alice", "kind": "ssh", "principal": "ubuntu",
        "targets": ["prod-db-1"], "role": "ops", "rule": "allow.logins",
        "reason": "role 'ops' allows login 'ubuntu' on nodes matching its node_labels",
        "detail": "role ops: allow.logins, node_labels env=prod", "risky": [],
    }]
    assert document["access"]["summary"]["added"] == 1
    _plan(work, "--fail-on", "risky")  # nothing flagged: exit 0


def test_a_wildcard_label_is_flagged(tmp_path: Path) -> None:
    work = _repo(tmp_path)
    _change(work, "node_labels: {env: prod}", "node_labels: {env: '*'}")
    text = _plan(work, "--fail-on", "risky", code=4)
    assert _access_lines(text) == [
        "+ alice  ssh alice@dev-1  (role ops: allow.logins, node_labels env=*)"
        "  RISKY: wildcard labels",
        "Access: 1 grant added, 0 removed, 1 user; 1 risky",
    ]
    access = json.loads(_plan(work, "-o", "json"))["access"]
    assert [(c["user"], c["targets"], c["risky"]) for c in access["changes"]] == [
        ("alice", ["dev-1"], ["wildcard labels"])]
    assert access["summary"]["risky"] == 1


def test_a_remote_role_mapped_to_an_admin_role(tmp_path: Path) -> None:
    work = _repo(tmp_path)
    _change(work, "role_map: [{remote: dev, local: [ops]}]",
            "role_map: [{remote: dev, local: [ops]}, {remote: '*', local: [admin]}]")
    text = _plan(work, "--fail-on", "risky", code=4)
    assert _access_lines(text) == [
        "+ trusted_cluster corp  role_map '*' -> 'admin'  RISKY: role_map widening, admin rules",
        "Access: 0 grants added, 0 removed, 0 users, 1 role_map change; 1 risky",
    ]
    access = json.loads(_plan(work, "-o", "json"))["access"]
    assert access["role_map"] == [{"sign": "+", "cluster": "corp", "remote": "*",
                                   "local": "admin",
                                   "risky": ["role_map widening", "admin rules"]}]
    markdown = _plan(work, "--format", "markdown")
    assert "#### Risky grants" in markdown
    assert "+ trusted_cluster corp  role_map '*' -> 'admin'" in markdown


def test_a_reformatted_file_changes_no_access(tmp_path: Path) -> None:
    work = _repo(tmp_path)
    _change(work, "node_labels: {env: prod}", "node_labels:\n      env: \"prod\"")
    _change(work, "spec: {roles: [contractor]}", "spec:\n  roles:\n    - contractor")
    assert _access_lines(_plan(work)) == ["Access: 0 grants added, 0 removed, 0 users; 0 risky"]
    access = json.loads(_plan(work, "-o", "json"))["access"]
    assert access["changes"] == []
    assert access["role_map"] == []


def test_a_deleted_user_loses_everything(tmp_path: Path) -> None:
    work = _repo(tmp_path)
    _change(work, "---\napiVersion: limen.dev/v1alpha1\nkind: User\nmetadata: {name: bob}\n"
            "spec: {roles: [contractor]}\n", "")
    assert _access_lines(_plan(work)) == [
        "- bob  db postgres@billing  (user deleted)",
        "Access: 0 grants added, 1 removed, 1 user; 0 risky",
    ]
    change = json.loads(_plan(work, "-o", "json"))["access"]["changes"][0]
    assert (change["sign"], change["user"], change["kind"], change["principal"],
            change["targets"], change["reason"]) == (
        "-", "bob", "db", "postgres", ["billing"], "the user is deleted")


def test_an_exported_inventory_and_enforcement_agree(tmp_path: Path,
                                                     clusters: ClusterFactory) -> None:
    """The review runs from the repository and `lmctl inventory export` alone; the grants
    it reports are what `lmctl access check` answers on a cluster holding the new state."""
    config = tmp_path / "limen.yaml"  # a database only its agent's config declares
    config.write_text("db:\n  resources: []\n  databases:\n    - {name: side-db, labels: "
                      "{env: prod}, kind: db, protocol: postgres, address: '127.0.0.1:5'}\n",
                      encoding="utf-8")
    cluster = clusters("review", "--roles", "auth,proxy,node,db", "-c", str(config))
    api_user = ("apiVersion: limen.dev/v1alpha1\nkind: User\nmetadata: {name: dave}\n"
                "spec: {roles: [ops], traits: {logins: [dave]}}\n")
    seed = tmp_path / "seed.yaml"
    seed.write_text(BASE + "---\n" + api_user, encoding="utf-8")
    cluster.lmctl("apply", "-f", seed)
    inventory = tmp_path / "inventory.json"

    def exported_with_side_db() -> dict[str, Any] | None:  # once its agent heartbeated it
        text = cluster.lmctl("inventory", "export", "-o", "json").stdout
        found: dict[str, Any] = json.loads(text)
        names = {o["metadata"]["name"] for o in found["objects"]}
        return found if "side-db" in names and inventory.write_text(text) else None
    exported = wait_for(exported_with_side_db, 20.0, "side-db in the inventory")
    side_db = next(o for o in exported["objects"] if o["metadata"]["name"] == "side-db")
    assert (side_db["metadata"]["labels"], side_db["spec"]["kind"]) == ({"env": "prod"}, "db")
    dave = next(o for o in exported["objects"] if o["metadata"]["name"] == "dave")
    assert dave["spec"] == {"roles": ["ops"], "traits": {"logins": ["dave"]}}

    work = _repo(tmp_path)
    _change(work, 'logins: ["{{internal.logins}}"]', 'logins: ["{{internal.logins}}", root]')
    result = run([command("lmctl"), "gitops", "plan", work.path / "access", "--against", "main",
                  "--access", "--inventory", inventory, "-o", "json"],
                 env=clean_env(LIMEN_DATA_DIR=tmp_path / "nowhere"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    changes = json.loads(result.stdout)["access"]["changes"]
    assert [(c["user"], c["principal"], c["targets"], c["risky"]) for c in changes] == [
        ("alice", "root", ["prod-db-1"], ["root login"]),
        ("dave", "root", ["prod-db-1"], ["root login"])]

    db_change = _repo(tmp_path / "db")  # a database known from a heartbeat is reviewed too
    _change(db_change, "db_users: [postgres]", "db_users: [postgres, admin]")
    result = run([command("lmctl"), "gitops", "plan", db_change.path / "access", "--against",
                  "main", "--access", "--inventory", inventory, "-o", "json"],
                 env=clean_env(LIMEN_DATA_DIR=tmp_path / "nowhere"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [(c["user"], c["principal"], c["targets"]) for c in
            json.loads(result.stdout)["access"]["changes"]] == [
        ("bob", "admin", ["billing", "side-db"])]

    live = run([command("lmctl"), "--auth", cluster.auth, "-i", cluster.data_dir / "admin",
                "gitops", "plan", work.path / "access", "--against", "main", "--access",
                "-o", "json"], env=clean_env(), check=False)
    assert live.returncode == 0, live.stdout + live.stderr
    assert json.loads(live.stdout)["access"]["changes"] == changes  # the auth API, read live

    changed = tmp_path / "after.yaml"
    changed.write_text((work.path / "access" / "all.yaml").read_text(encoding="utf-8"),
                       encoding="utf-8")
    cluster.lmctl("apply", "-f", changed)
    for change in changes:
        check = cluster.lmctl("access", "check", change["user"], f"resource/{change['targets'][0]}",
                              "--login", change["principal"], "-o", "json")
        verdict = json.loads(check.stdout)
        assert (verdict["allowed"], verdict["role"], verdict["rule"]) == (
            True, change["role"], change["rule"])
    denied = cluster.lmctl("access", "check", "alice", "resource/dev-1", "--login", "root",
                           check=False)
    assert denied.returncode == 1  # not reported, and indeed not granted


def test_access_options_need_access(tmp_path: Path) -> None:
    work = _repo(tmp_path)
    result = run([command("lmctl"), "gitops", "plan", work.path / "access", "--fail-on",
                  "risky"], env=clean_env(), check=False)
    assert result.returncode == 2
    assert "--fail-on and --inventory need --access" in result.stderr
