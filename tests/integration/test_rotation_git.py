"""CA rotation declared in Git (issue #18): ``spec.rotation`` on the Cluster document, with a
real ``limen start --gitops file://REPO`` (every role in one process: auth, proxy, node agent),
a user on ``lmsh`` and OpenSSH, and commits pushed to a bare repository.

A manual host CA rotation moves one phase per commit (init → update_clients →
update_servers → standby): the CA holds two keys from init, a new login and a new ssh session
work in every phase, an ssh session opened before stays up, and the old key is gone after
standby. A commit that jumps a phase is refused (audited, shown by ``lmctl status`` and in the
document's status) while the rest of the commit applies; a restart re-syncs the same commit
and nothing runs twice; a user CA rotation is rolled back by commit; an ``auto`` request with
a short grace period reaches standby by itself. Every change is audited ``ca.rotation`` with
``via: cluster document``, the request id and the commit."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_git import WorkTree, bare

from .apart_cluster import password_login
from .cluster import LimenCluster, LimenUser, describe, wait_for
from .echo_session import EchoSession
from .test_agents_apart import EXAMPLE_ROLES, _config

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
NAME = "rgit"
DEADLINE = 20.0
"""Seconds a pushed commit has to be synced (1 s polls) and reconciled on a loaded machine."""
LAST: list[subprocess.CompletedProcess[str]] = []


def cluster_document(*rotation: dict[str, Any]) -> str:
    spec: dict[str, Any] = {"public_address": "127.0.0.1:3080"}
    if rotation:
        spec["rotation"] = list(rotation)
    return yaml.safe_dump({"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
                           "metadata": {"name": NAME}, "spec": spec})


def role_document(name: str) -> str:
    return yaml.safe_dump({"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
                           "metadata": {"name": name}, "spec": {"allow": {"logins": ["x"]}}})


@dataclass
class Site:
    cluster: LimenCluster
    repo: WorkTree
    user: LimenUser

    def commit(self, message: str, *rotation: dict[str, Any]) -> str:
        self.repo.write("cluster.yaml", cluster_document(*rotation))
        sha = self.repo.commit(message)
        wait_for(lambda: (self.cluster.lmctl_json("gitops", "status")["live"] or {})
                 .get("sha") == sha, DEADLINE, f"commit {sha[:12]} ({message}) to be live")
        return sha

    def phase(self, ca_type: str) -> str:
        return str(self.cluster.status()["ca_rotation"][ca_type]["phase"])

    def wait_phase(self, ca_type: str, phase: str) -> None:
        wait_for(lambda: self.phase(ca_type) == phase, DEADLINE,
                 f"the {ca_type} CA to reach phase {phase}")

    def declared(self, ca_type: str) -> dict[str, Any]:
        return dict(self.cluster.status().get("ca_rotation_requests", {}).get(ca_type) or {})

    def host_keys(self) -> list[str]:
        return list(self.cluster.lmctl_json("auth", "export", "--type", "host")
                    ["ssh_public_keys"])

    def rotations(self, ca_type: str) -> list[dict[str, Any]]:
        return [e for e in self.cluster.audit("ca.rotation") if e["ca_type"] == ca_type]


def _ssh_ok(user: LimenUser, marker: str) -> bool:
    result = user.lmsh("ssh", f"{LOGIN}@{HOST}", f"echo {marker}", check=False)
    LAST[:] = [result]
    return result.returncode == 0 and result.stdout.strip() == marker


def _new_session(site: Site, marker: str) -> None:
    try:
        wait_for(lambda: _ssh_ok(site.user, marker), DEADLINE, f"a new ssh session ({marker})")
    except AssertionError as err:
        raise AssertionError(f"{err}\n{describe(LAST[0])}{site.cluster.output()[-4000:]}"
                             ) from None


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("rotation-git")
    remote = bare(root / "access.git")
    repo = WorkTree(root / "work", remote)
    for path in EXAMPLE_ROLES.glob("*.yaml"):
        shutil.copy(path, repo.path / path.name)
    repo.write("cluster.yaml", cluster_document())
    repo.commit("roles and the cluster")
    cluster = LimenCluster(root / "one", NAME, [
        "-c", str(_config(root / "one.yaml", {"cluster": {"second_factor": "off"}})),
        "--gitops", f"file://{remote}", "--gitops-interval", "1s"])
    cluster.start()
    try:
        user = LimenUser("gina", root / "gina", cluster.web)
        link = cluster.add_user("gina", ["ops"], [LOGIN])["url"]
        user.lmsh("signup", "--link", link, "--password-stdin", input=user.password + "\n")
        password_login(user)
        wait_for(lambda: _ssh_ok(user, "ready"), DEADLINE, "the node to serve ssh")
        yield Site(cluster, repo, user)
    finally:
        cluster.kill()


def _host(phase: str, rid: str = "host-1") -> dict[str, Any]:
    return {"id": rid, "type": "host", "mode": "manual", "phase": phase}


def test_1_a_manual_host_rotation_one_commit_per_phase(site: Site) -> None:
    old_keys = site.host_keys()
    assert len(old_keys) == 1
    session = EchoSession(site.user, f"{LOGIN}@{HOST}")
    shas = {}
    try:
        session.echo("start")
        for phase in ("init", "update_clients", "update_servers", "standby"):
            shas[phase] = site.commit(f"host CA: {phase}", _host(phase))
            site.wait_phase("host", phase)
            if phase == "init":
                assert len(site.host_keys()) == 2  # both keys trusted from init on
            password_login(site.user)  # a new login in every phase
            _new_session(site, f"in-{phase}")
            session.echo(phase)  # the session opened before the rotation stays up
        session.echo("end")
    finally:
        session.close()
    new_keys = site.host_keys()
    assert len(new_keys) == 1
    assert new_keys != old_keys  # the old key is gone after standby
    moves = [(e["from"], e["to"], e["via"], e["request_id"], e["user"], e.get("git_revision"))
             for e in site.rotations("host") if e["success"]]
    assert moves == [
        ("standby", "init", "cluster document", "host-1", "gitops", shas["init"]),
        ("init", "update_clients", "cluster document", "host-1", "gitops",
         shas["update_clients"]),
        ("update_clients", "update_servers", "cluster document", "host-1", "gitops",
         shas["update_servers"]),
        ("update_servers", "standby", "cluster document", "host-1", "gitops",
         shas["standby"])]
    state = site.cluster.status()["ca_rotation"]["host"]
    assert (state["request"], state["last_request"]) == ("host-1", "host-1")
    assert site.declared("host")["state"] == "Done"


def test_2_a_jump_is_refused_and_the_rest_of_the_commit_applies(site: Site) -> None:
    site.repo.write("extra-role.yaml", role_document("extra"))
    sha = site.commit("host CA straight to update_servers, and a role",
                      _host("update_servers", "host-2"))
    wait_for(lambda: site.declared("host").get("state") == "Refused", DEADLINE,
             "the refusal in the document's status")
    assert site.phase("host") == "standby"
    role = site.cluster.lmctl("get", "role/extra", "-o", "json", check=False)
    assert role.returncode == 0, describe(role)  # the rest of the commit applied
    [refused] = [e for e in site.rotations("host") if not e["success"]]
    assert refused["request_id"] == "host-2"
    assert refused["via"] == "cluster document"
    assert refused["git_revision"] == sha
    assert "a new rotation starts at init, not update_servers" in refused["reason"]
    text = site.cluster.lmctl("status").stdout
    assert "CA host request host-2: Refused: the host CA is in phase standby" in text
    sync = site.cluster.lmctl("gitops", "status").stdout  # the sync's status says it too
    assert "Rotation:     host CA request host-2 refused: the host CA is in phase standby" \
        in sync
    document = site.cluster.lmctl_json("get", f"cluster/{NAME}")
    assert document["status"]["rotation"]["host"]["state"] == "Refused"


def test_3_a_restart_re_syncs_and_runs_nothing_twice(site: Site) -> None:
    before = site.cluster.audit("ca.rotation")
    site.cluster.stop()
    site.cluster.start()  # the first sync applies the same commit again before ready
    site.user.proxy = site.cluster.web  # random ports: the proxy listens elsewhere now
    pin = site.cluster.status()["ca_fingerprints"]["tls"]  # the same cluster, so the same CA
    site.user.lmsh("login", "--proxy", site.user.proxy, "--user", site.user.name,
                   "--ca-pin", pin, "--password-stdin", input=site.user.password + "\n")
    # a next commit, reconciled with the whole document: proof the reconciler ran since
    site.commit("user CA: init", _host("update_servers", "host-2"),
                {"id": "user-1", "type": "user", "mode": "manual", "phase": "init"})
    site.wait_phase("user", "init")
    after = site.cluster.audit("ca.rotation")
    assert [e for e in after if e["ca_type"] == "host"] == \
        [e for e in before if e["ca_type"] == "host"]  # nothing re-run, nothing re-audited
    assert site.phase("host") == "standby"


def test_4_rollback_by_commit(site: Site, tmp_path: Path) -> None:
    password_login(site.user)
    current = LimenUser(site.user.name, tmp_path / "current", site.user.proxy,
                        password=site.user.password)
    shutil.copytree(site.user.home, current.home)
    for phase in ("update_clients", "rollback", "standby"):
        site.commit(f"user CA: {phase}",
                    {"id": "user-1", "type": "user", "mode": "manual", "phase": phase})
        site.wait_phase("user", phase)
        if phase == "update_clients":
            password_login(site.user)  # signed by the new key
            _new_session(site, "new-user-key")
    wait_for(lambda: not _ssh_ok(site.user, "dropped"), DEADLINE,
             "the certificate of the dropped key to be refused")
    assert _ssh_ok(current, "old-key-again")  # the key rolled back to works
    password_login(site.user)
    _new_session(site, "fresh")
    moves = [(e["from"], e["to"]) for e in site.rotations("user") if e["success"]]
    assert moves == [("standby", "init"), ("init", "update_clients"),
                     ("update_clients", "rollback"), ("rollback", "standby")]


def test_5_an_auto_request_reaches_standby_by_itself(site: Site) -> None:
    site.commit("user CA: automatic",
                {"id": "user-2", "type": "user", "mode": "auto", "grace_period": "3s"})
    wait_for(lambda: [(e["from"], e["to"], e["user"]) for e in site.rotations("user")
                      if e["success"] and e.get("request_id") == "user-2"] == [
        ("standby", "init", "gitops"), ("init", "update_clients", "auth"),
        ("update_clients", "update_servers", "auth"), ("update_servers", "standby", "auth")],
        DEADLINE, "the automatic rotation to finish (auth moving it on by itself)")
    assert site.phase("user") == "standby"
    state = site.cluster.status()["ca_rotation"]["user"]
    assert (state["mode"], state["request"]) == ("auto", "user-2")
    password_login(site.user)
    _new_session(site, "after-auto")
    assert json.loads(site.cluster.lmctl("status", "-o", "json").stdout)[
        "ca_rotation_requests"]["user"]["state"] == "Done"
