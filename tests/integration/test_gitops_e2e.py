"""GitOps end to end: a real ``limen start --gitops file://REPO --gitops-interval 1s`` follows
commits pushed to a bare repository, as people and ``lmctl``/``lmsh`` see it.

One cluster and one repository serve the module; every test leaves the branch tip valid and
its objects named apart, so the tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitops_git import git

from .cluster import ClusterFactory, LimenCluster, describe, inspect_ssh_cert, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"

INTERVAL = 1.0
DEADLINE = INTERVAL + 14.0
"""How long a pushed commit may take to be live: one poll plus a generous margin for a loaded
machine (the benchmark measures the real latency: bench/bench_gitops.py)."""


def role_yaml(name: str, *logins: str, annotations: dict[str, str] | None = None) -> str:
    meta = f"  name: {name}\n"
    if annotations:
        meta += "  annotations:\n" + "".join(f"    {k}: '{v}'\n" for k, v in annotations.items())
    return ("apiVersion: limen.dev/v1alpha1\nkind: Role\nmetadata:\n" + meta +
            "spec:\n  allow:\n    logins: [" + ", ".join(logins) + "]\n")


@dataclass
class Repo:
    """A developer's checkout that pushes to the bare repository the cluster syncs from."""

    work: Path
    remote: Path

    def write(self, relative: str, text: str) -> None:
        target = self.work / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def remove(self, relative: str) -> None:
        (self.work / relative).unlink()

    def commit(self, message: str) -> str:
        git(self.work, "add", "--all")
        git(self.work, "commit", "--quiet", "--allow-empty", "-m", message)
        git(self.work, "push", "--quiet", "origin", "HEAD:refs/heads/main")
        return git(self.work, "rev-parse", "HEAD")


@dataclass
class Site:
    cluster: LimenCluster
    repo: Repo

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.cluster.lmctl_json("gitops", "status")
        return result

    def wait_live(self, sha: str) -> dict[str, Any]:
        def live() -> dict[str, Any] | None:
            status = self.status()
            return status if (status["live"] or {}).get("sha") == sha else None
        return wait_for(live, DEADLINE, f"commit {sha[:12]} to be live")

    def wait_attempted(self, sha: str) -> dict[str, Any]:
        def attempted() -> dict[str, Any] | None:
            status = self.status()
            return status if (status["last_attempt"] or {}).get("sha") == sha else None
        return wait_for(attempted, DEADLINE, f"commit {sha[:12]} to be attempted")

    def role(self, name: str) -> dict[str, Any] | None:
        result = self.cluster.lmctl("get", f"role/{name}", "-o", "json", check=False)
        return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory,
         tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("gitops")
    remote = root / "access.git"
    remote.mkdir()
    git(remote, "init", "--quiet", "--bare", "--initial-branch=main")
    work = root / "work"
    work.mkdir()
    git(work, "init", "--quiet", "--initial-branch=main")
    git(work, "remote", "add", "origin", str(remote))
    repo = Repo(work, remote)
    repo.write("roles/base.yaml", role_yaml("base", "nobody"))
    repo.commit("base")
    cluster = module_clusters("gitops", "--gitops", f"file://{remote}",
                              "--gitops-interval", f"{INTERVAL:g}s")
    return Site(cluster, repo)


def test_the_first_sync_is_done_before_the_cluster_reports_ready(site: Site) -> None:
    base = site.role("base")  # no waiting: listeners.json appears after the first sync
    assert base is not None
    assert base["metadata"]["labels"]["limen.dev/origin"] == "git"


def test_a_committed_role_reaches_the_next_certificate(site: Site) -> None:
    site.repo.write("roles/web.yaml", role_yaml("web", "ubuntu"))
    site.repo.write("users/alice.yaml", "apiVersion: limen.dev/v1alpha1\nkind: User\n"
                    "metadata: {name: alice}\nspec: {roles: [web]}\n")
    first = site.repo.commit("web role and alice")
    wait_for(lambda: site.role("web"), DEADLINE, "role/web to appear")
    site.wait_live(first)

    alice = site.cluster.user("alice")
    alice.signup(site.cluster.lmctl_json("users", "invite", "alice")["url"])
    alice.login()
    cert_path = alice.ssh_cert_path(site.cluster.name)
    assert inspect_ssh_cert(cert_path).principals == ("ubuntu",)

    site.repo.write("roles/web.yaml", role_yaml("web", "ubuntu", "deploy"))
    second = site.repo.commit("web may deploy")
    wait_for(lambda: (site.role("web") or {}).get("spec", {}).get("allow", {}).get("logins")
             == ["ubuntu", "deploy"], DEADLINE, "role/web to gain deploy")
    alice.login()
    assert sorted(inspect_ssh_cert(cert_path).principals) == ["deploy", "ubuntu"]
    assert site.status()["live"]["sha"] == second


def test_a_deleted_file_is_pruned(site: Site) -> None:
    site.repo.write("roles/temp.yaml", role_yaml("temp", "tmp"))
    site.wait_live(site.repo.commit("temp role"))
    assert site.role("temp") is not None

    site.repo.remove("roles/temp.yaml")
    site.wait_live(site.repo.commit("drop temp"))
    assert site.role("temp") is None
    deleted = [e for e in site.cluster.audit("role.deleted") if e["name"] == "temp"]
    assert [(e["user"], e["origin"]) for e in deleted] == [("gitops", "git")]


BAD_ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata:
  name: broken
spec:
  allow:
    logins: [fine]
  options:
    max_session_ttl: 8 hours
"""


def test_an_invalid_commit_changes_nothing_and_says_why(site: Site) -> None:
    site.repo.write("roles/stable.yaml", role_yaml("stable", "one"))
    good = site.repo.commit("stable role")
    site.wait_live(good)
    before = site.cluster.lmctl("get", "roles", "-o", "json").stdout

    site.repo.write("roles/stable.yaml", role_yaml("stable", "one", "two"))
    site.repo.write("roles/broken.yaml", BAD_ROLE)
    bad = site.repo.commit("broken role")
    status = site.wait_attempted(bad)

    assert status["live"]["sha"] == good
    assert status["last_attempt"]["ok"] is False
    [error] = status["last_attempt"]["errors"]
    assert error.startswith("roles/broken.yaml[0]")
    assert "spec.options.max_session_ttl" in error
    assert site.cluster.lmctl("get", "roles", "-o", "json").stdout == before
    rejected = [e for e in site.cluster.audit("gitops.rejected") if e["sha"] == bad]
    assert len(rejected) == 1
    assert rejected[0]["errors"] == [error]
    assert rejected[0]["code"] == "L8001W"
    text = site.cluster.lmctl("gitops", "status").stdout
    assert good[:12] in text
    assert "REJECTED" in text
    assert "roles/broken.yaml[0]" in text

    site.repo.remove("roles/broken.yaml")
    fixed = site.repo.commit("remove the broken role")
    site.wait_live(fixed)
    assert site.role("stable")["spec"]["allow"]["logins"] == ["one", "two"]  # type: ignore[index]


def test_a_commit_with_a_secret_is_rejected(site: Site) -> None:
    site.repo.write("trusted-clusters/root.yaml", """\
apiVersion: limen.dev/v1alpha1
kind: TrustedCluster
metadata: {name: root}
spec:
  enabled: false
  proxy_address: root.example.com:3080
  token_secret_ref: {file: root.token}
  token: 0a1b2c3d4e5f60718293a4b5c6d7e8f9
""")
    bad = site.repo.commit("inline join token")
    status = site.wait_attempted(bad)
    assert status["last_attempt"]["ok"] is False
    assert any("trusted-clusters/root.yaml[0]" in e and "looks like a secret" in e
               for e in status["last_attempt"]["errors"])
    assert "0a1b2c3d4e5f" not in json.dumps(site.cluster.audit("gitops.rejected"))
    assert site.cluster.lmctl("get", "trustedclusters", "-o", "json", check=False) \
        .stdout.count("root.example.com") == 0

    site.repo.remove("trusted-clusters/root.yaml")
    site.wait_live(site.repo.commit("token removed"))


def test_a_force_push_of_an_older_commit_is_followed(site: Site) -> None:
    site.repo.write("roles/rewind.yaml", role_yaml("rewind", "before"))
    older = site.repo.commit("rewind: before")
    site.wait_live(older)
    site.repo.write("roles/rewind.yaml", role_yaml("rewind", "after"))
    site.wait_live(site.repo.commit("rewind: after"))

    git(site.repo.work, "reset", "--quiet", "--hard", older)
    git(site.repo.work, "push", "--quiet", "--force", "origin", "HEAD:refs/heads/main")

    site.wait_live(older)
    assert site.role("rewind")["spec"]["allow"]["logins"] == ["before"]  # type: ignore[index]


def test_an_api_owned_role_is_untouched_until_adopted(site: Site, tmp_path: Path) -> None:
    manual = tmp_path / "shared.yaml"
    manual.write_text(role_yaml("shared", "by-hand"), encoding="utf-8")
    site.cluster.lmctl("apply", "-f", manual)

    site.repo.write("roles/shared.yaml", role_yaml("shared", "from-git"))
    clash = site.repo.commit("declare shared")
    status = site.wait_attempted(clash)

    assert status["last_attempt"]["ok"] is False
    assert status["last_attempt"]["errors"] == [
        "roles/shared.yaml[0] metadata.name: Role/shared is owned by origin api; annotate it "
        "with limen.dev/adopt: git to hand it over (line 4)"]
    shared = site.role("shared")
    assert shared is not None
    assert shared["spec"]["allow"]["logins"] == ["by-hand"]
    assert shared["metadata"]["labels"]["limen.dev/origin"] == "api"

    site.repo.write("roles/shared.yaml", role_yaml("shared", "from-git",
                                                   annotations={"limen.dev/adopt": "git"}))
    site.wait_live(site.repo.commit("adopt shared"))
    shared = site.role("shared")
    assert shared is not None
    assert shared["spec"]["allow"]["logins"] == ["from-git"]
    assert shared["metadata"]["labels"]["limen.dev/origin"] == "git"


def test_lmctl_gitops_plan_against_the_cluster_and_a_ref(site: Site) -> None:
    site.repo.write("roles/planned.yaml", role_yaml("planned", "a"))
    site.wait_live(site.repo.commit("planned role"))
    site.repo.write("roles/planned.yaml", role_yaml("planned", "a", "b"))  # not committed

    for against in (str(site.cluster.data_dir), "HEAD"):
        result = site.cluster.lmctl("gitops", "plan", site.repo.work, "--against", against)
        lines = result.stdout.splitlines()
        assert lines[:2] == ["~ Role/planned updated",
                             '    spec.allow.logins: ["a"] → ["a", "b"]'], describe(result)
        assert lines[-1].startswith("Plan: 0 created, 1 updated, 0 deleted, "), describe(result)

    site.repo.write("roles/planned.yaml", BAD_ROLE)
    invalid = site.cluster.lmctl("gitops", "plan", site.repo.work, check=False)
    assert invalid.returncode == 1, describe(invalid)
    assert "roles/planned.yaml[0]" in invalid.stderr
    assert "spec.options.max_session_ttl" in invalid.stderr
    git(site.repo.work, "checkout", "--quiet", "--", "roles/planned.yaml")


# -- the README's first command: a directory, in a Git work tree or not --------------------

def test_a_directory_inside_a_work_tree_syncs_its_committed_content(
        clusters: ClusterFactory, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(EXAMPLES, project / "examples" / "gitops")
    git(project, "init", "--quiet", "--initial-branch=main")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "-m", "examples")
    cluster = clusters("demo", "--gitops", str(project / "examples" / "gitops"),
                       "--gitops-interval", "1s")

    roles = cluster.lmctl_json("get", "roles")["items"]
    # the demo's roles, its auditor taking the preset of that name over, and two presets
    origins = {r["metadata"]["name"]: r["metadata"]["labels"]["limen.dev/origin"]
               for r in roles}
    assert origins == {"access": "preset", "auditor": "git", "dev": "git", "editor": "preset",
                       "ops": "git"}
    trusted = cluster.lmctl_json("get", "trustedcluster/org-root")
    assert trusted["spec"]["enabled"] is False
    status = cluster.lmctl_json("gitops", "status")
    assert status["mode"] == "git"
    assert status["path"] == "examples/gitops"
    assert status["live"]["sha"] == git(project, "rev-parse", "HEAD")

    dev = project / "examples" / "gitops" / "roles" / "dev.yaml"
    dev.write_text(dev.read_text().replace("max_session_ttl: 8h", "max_session_ttl: 2h"))
    git(project, "commit", "--quiet", "-am", "shorter dev sessions")
    wait_for(lambda: cluster.lmctl_json("get", "role/dev")["spec"]["options"]
             ["max_session_ttl"] == "2h", DEADLINE, "the committed change to apply")


def test_a_directory_outside_git_is_synced_as_it_is_on_disk(
        clusters: ClusterFactory, tmp_path: Path) -> None:
    plain = tmp_path / "access"
    shutil.copytree(EXAMPLES, plain)
    cluster = clusters("plain", "--gitops", str(plain), "--gitops-interval", "1s")

    status = cluster.lmctl_json("gitops", "status")
    assert status["mode"] == "directory"
    assert status["live"]["sha"] == "working tree"
    assert status["live"]["content_hash"].startswith("sha256:")
    (plain / "roles" / "auditor.yaml").unlink()
    wait_for(lambda: cluster.lmctl("get", "role/auditor", check=False).returncode == 1,
             DEADLINE, "role/auditor to be pruned")
    assert cluster.lmctl_json("gitops", "status")["live"]["content_hash"] != \
        status["live"]["content_hash"]
