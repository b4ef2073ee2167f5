"""The administrator's ``lmctl`` against a real running cluster (like ``tctl``): users ls /
update / reset / unlock / rm with the ownership of Git's users, nodes ls and access check of
heartbeated nodes (two with one hostname: ambiguous), tokens ls / rm, audit search newest
first with sessions, ``-o json|yaml`` on every listing, friendly store errors; and a data
directory that holds no cluster: refused, nothing created, nothing stored or audited.

One cluster for the module: ``limen start --gitops <copy of examples/gitops>`` (its users and
roles are owned by Git) with its own node ``solo`` and two node agents both named ``twin``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .cluster import (
    ClusterFactory,
    LimenCluster,
    clean_env,
    command,
    describe,
    run,
    wait_for,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"
NAME = "admin"


@dataclass
class Site:
    cluster: LimenCluster
    twin_ids: list[str]


def _node_agent(site: LimenCluster, root: Path, name: str) -> LimenCluster:
    token = site.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
    return LimenCluster(root / name, NAME, [
        "--roles", "node", "--nodename", "twin", "--labels", "env=dev",
        "--proxy", site.web, "--token", token["token"], "--ca-pin", token["ca_pin"]])


def _nodes(cluster: LimenCluster) -> list[dict[str, Any]]:
    return list(cluster.lmctl_json("nodes", "ls")["items"])


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("admin")
    repo = root / "access"
    shutil.copytree(EXAMPLES, repo)
    cluster = module_clusters(NAME, "--gitops", str(repo), "--nodename", "solo",
                              "--labels", "env=dev")
    agents = [_node_agent(cluster, root, "twin-a"), _node_agent(cluster, root, "twin-b")]
    try:
        for agent in agents:
            agent.start()
        wait_for(lambda: len(_nodes(cluster)) == 3, 30.0, "solo and both twins heartbeating")
        twin_ids = sorted((a.data_dir / "host_uuid").read_text(encoding="utf-8").strip()
                          for a in agents)
        yield Site(cluster, twin_ids)
    finally:
        for agent in agents:
            agent.kill()


def _error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line lmctl prints on stderr for a refusal (exit 1, no traceback)."""
    assert result.returncode == 1, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("error: "), describe(result)
    return lines[0]


def _table(result: subprocess.CompletedProcess[str]) -> list[list[str]]:
    assert result.returncode == 0, describe(result)
    return [line.split("  ") for line in result.stdout.splitlines()]


def _row(result: subprocess.CompletedProcess[str], first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for cells in _table(result)[1:]:
        cells = [c.strip() for c in cells if c.strip()]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in\n{result.stdout}")


# -- users ----------------------------------------------------------------------------------
def test_users_ls_update_reset_rm_and_the_friendly_already_exists(site: Site) -> None:
    lm = site.cluster
    lm.add_user("mia", roles=["dev"], logins=["mia"])
    again = lm.lmctl("users", "add", "mia", "--roles", "dev", check=False)
    assert _error(again) == "error: user 'mia' already exists"

    listing = lm.lmctl("users", "ls")
    assert _table(listing)[0][0] == "NAME"
    assert _row(listing, "mia") == ["mia", "dev", "mia", "api", "pending sign-up"]
    assert _row(listing, "alice")[3] == "git"

    updated = lm.lmctl("users", "update", "mia", "--set-roles", "dev,ops",
                       "--set-logins", "mia,root")
    assert "roles dev,ops, logins mia,root" in updated.stdout
    users = {u["name"]: u for u in lm.lmctl_json("users", "ls")["items"]}
    assert (users["mia"]["roles"], users["mia"]["logins"]) == (["dev", "ops"], ["mia", "root"])
    as_yaml = list(yaml.safe_load_all(lm.lmctl("users", "ls", "-o", "yaml").stdout))
    assert "mia" in {u["name"] for u in as_yaml}

    reset = lm.lmctl("users", "reset", "mia", "-o", "json")
    assert json.loads(reset.stdout)["url"].startswith(f"https://{lm.web}/web/signup/")
    assert "reset" in [e.get("action") for e in lm.audit("user.update", user="admin")]

    assert lm.lmctl("users", "rm", "mia").stdout.strip() == "User 'mia' deleted."
    gone = lm.lmctl("users", "rm", "mia", check=False)
    assert _error(gone) == "error: user 'mia' not found"


def test_users_owned_by_git_are_refused_with_where_to_change_them(site: Site) -> None:
    lm = site.cluster
    for args in (["users", "update", "alice", "--set-roles", "ops"], ["users", "rm", "alice"]):
        line = _error(lm.lmctl(*args, check=False))
        assert "user 'alice'" in line
        assert "owned by origin git" in line
        assert "Git repository" in line
    assert lm.lmctl_json("get", "user/alice")["spec"]["roles"] == ["dev"]
    refused = [e for e in lm.audit("user.update", "user.delete") if e.get("name") == "alice"]
    assert [(e["event"], e["success"]) for e in refused] == [("user.update", False),
                                                           ("user.delete", False)]


def test_unlock_lifts_a_lockout(site: Site) -> None:
    lm = site.cluster
    lou = lm.signed_up_user("lou", roles=["dev"])
    for _ in range(5):
        assert lou.login("not the password", check=False).returncode != 0
    assert "locked until" in _row(lm.lmctl("users", "ls"), "lou")[4]
    assert lou.login(check=False).returncode != 0  # locked: even the right password
    assert lm.lmctl("users", "unlock", "lou").stdout.strip() == "User 'lou' unlocked."
    assert _row(lm.lmctl("users", "ls"), "lou")[4] == "signed up"
    lou.login()


# -- nodes and access checks ----------------------------------------------------------------
def test_nodes_ls_and_access_check_of_a_heartbeated_node(site: Site) -> None:
    lm = site.cluster
    listing = lm.lmctl("nodes", "ls")
    assert _table(listing)[0][:2] == ["HOSTNAME", "ID"]
    assert _row(listing, "solo")[-1] == "env=dev"
    nodes = _nodes(lm)
    assert sorted(n["host_id"] for n in nodes if n["hostname"] == "twin") == site.twin_ids
    as_yaml = list(yaml.safe_load_all(lm.lmctl("nodes", "ls", "-o", "yaml").stdout))
    assert sorted(n["hostname"] for n in as_yaml) == ["solo", "twin", "twin"]

    allowed = lm.lmctl("access", "check", "bob", "node/solo", "--login", "root")
    assert "ops" in allowed.stdout, describe(allowed)  # the deciding role
    by_id = lm.lmctl("access", "check", "bob", f"node/{site.twin_ids[0]}", "--login", "root")
    assert by_id.returncode == 0, describe(by_id)
    denied = lm.lmctl("access", "check", "carol", "node/solo", "--login", "root", check=False)
    assert denied.returncode == 1, describe(denied)
    assert "Traceback" not in denied.stderr

    ambiguous = _error(lm.lmctl("access", "check", "bob", "node/twin", "--login", "root",
                                check=False))
    assert "'twin' is ambiguous" in ambiguous
    assert all(host_id in ambiguous for host_id in site.twin_ids)
    offline = _error(lm.lmctl("access", "check", "bob", "node/nowhere", check=False))
    assert "not online" in offline


# -- tokens ---------------------------------------------------------------------------------
def test_tokens_ls_masks_and_rm_deletes(site: Site) -> None:
    lm = site.cluster
    issued = lm.lmctl_json("tokens", "add", "--type", "node", "--ttl", "10m",
                           "--labels", "env=lab", "--reusable")
    once = lm.lmctl_json("tokens", "add", "--type", "node", "--ttl", "9m")
    secret = issued["token"]
    listing = lm.lmctl("tokens", "ls")
    assert secret not in listing.stdout
    row = _row(listing, f"{secret[:6]}**********")
    assert row[1:3] == [issued["id"], "node"]
    assert row[4:] == ["reusable", "env=lab"]
    listed = {t["id"]: t for t in lm.lmctl_json("tokens", "ls")["items"]}
    assert listed[issued["id"]]["single_use"] is False
    assert listed[once["id"]]["single_use"] is True
    assert _row(listing, f"{once['token'][:6]}**********")[4:] == ["single use", "-"]
    assert secret not in lm.lmctl("tokens", "ls", "-o", "yaml").stdout

    removed = lm.lmctl("tokens", "rm", secret[:6])
    assert issued["id"] in removed.stdout
    assert issued["id"] not in {t["id"] for t in lm.lmctl_json("tokens", "ls")["items"]}
    assert [e["token_id"] for e in lm.audit("join_token.delete")] == [issued["id"]]
    assert "not found" in _error(lm.lmctl("tokens", "rm", issued["id"], check=False))


# -- audit and output formats ---------------------------------------------------------------
def test_audit_search_is_newest_first_and_limit_keeps_the_newest(site: Site) -> None:
    lm = site.cluster
    everything = lm.lmctl_json("audit", "search")["items"]
    times = [e["time"] for e in everything]
    assert times == sorted(times, reverse=True)
    newest = lm.lmctl_json("audit", "search", "--limit", "3")["items"]
    assert [e["uid"] for e in newest] == [e["uid"] for e in everything[:3]]
    text = lm.lmctl("audit", "search", "--limit", "3")
    assert text.stdout.splitlines()[0].split() == ["TIME", "EVENT", "CODE", "USER", "SESSION",
                                                   "SUCCESS"]
    assert len(text.stdout.splitlines()) == 4


def test_every_listing_speaks_json_and_yaml(site: Site) -> None:
    lm = site.cluster
    for args in (["users", "ls"], ["nodes", "ls"], ["tokens", "ls"], ["audit", "search"],
                 ["get", "roles"]):
        payload = lm.lmctl_json(*args)
        assert payload["kind"] == "List", args
        docs = list(yaml.safe_load_all(lm.lmctl(*args, "-o", "yaml").stdout))
        assert len(docs) == len(payload["items"]), args
    assert yaml.safe_load(lm.lmctl("status", "-o", "yaml").stdout)["cluster"] == NAME
    plan = lm.lmctl("gitops", "plan", EXAMPLES, "-o", "yaml")
    assert yaml.safe_load(plan.stdout)["valid"] is True
    assert json.loads(lm.lmctl("gitops", "plan", EXAMPLES, "-o", "json").stdout)["summary"]


# -- data directories that hold no cluster --------------------------------------------------
def _lmctl(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([command("lmctl"), "--data-dir", data_dir, *args], env=clean_env(),
               check=False)


@pytest.mark.parametrize("args", [["status"], ["tokens", "add", "--type", "node"],
                                  ["users", "ls"], ["get", "roles"]])
def test_a_missing_or_empty_directory_is_refused_and_left_alone(
        tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "missing"
    line = _error(_lmctl(missing, *args))
    assert "does not exist" in line
    assert "limen start --data-dir" in line
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no Limen cluster" in _error(_lmctl(empty, *args))
    assert list(empty.iterdir()) == []


def test_a_refused_token_add_stores_and_audits_nothing(tmp_path: Path) -> None:
    """A directory bootstrapped offline (roles applied, never started) has no CA: the token
    is refused before it is stored or audited."""
    boot = tmp_path / "boot"
    applied = _lmctl(boot, "apply", "-f", str(EXAMPLES / "roles"))
    assert applied.returncode == 0, describe(applied)
    line = _error(_lmctl(boot, "tokens", "add", "--type", "node"))
    assert "limen start" in line
    listed = _lmctl(boot, "tokens", "ls", "-o", "json")
    assert json.loads(listed.stdout)["items"] == [], describe(listed)
    events = json.loads(_lmctl(boot, "audit", "search", "-o", "json").stdout)["items"]
    assert [e for e in events if e["event"].startswith("join_token")] == []
    assert {e["event"] for e in events} == {"role.created"}
