"""Attack: a commit that deletes every document empties the cluster.

On a running ``limen start --gitops`` cluster following a local repository with 12 roles, a
commit deleting every file is refused: nothing is pruned, ``lmctl gitops status`` says why,
a ``gitops.rejected`` event records it. The next commit carrying the trailer
``Limen-Allow-Prune: yes`` is applied.
"""

from __future__ import annotations

from typing import Any

import pytest

from gitops_git import WorkTree
from integration.cluster import ClusterFactory, LimenCluster, describe, wait_for

from .attacks import assert_no_traceback

ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: {name}}}
spec: {{allow: {{logins: [{name}]}}}}
"""
NAMES = [f"team{i:02d}" for i in range(12)]
DEADLINE = 60.0


def status(lm: LimenCluster) -> dict[str, Any]:
    data: dict[str, Any] = lm.lmctl_json("gitops", "status")
    return data


def git_roles(lm: LimenCluster) -> list[str]:
    listed = lm.lmctl_json("get", "roles")
    return sorted(r["metadata"]["name"] for r in listed["items"]
                  if r["metadata"].get("labels", {}).get("limen.dev/origin") == "git")


def attempted(lm: LimenCluster, sha: str) -> bool:
    return (status(lm).get("last_attempt") or {}).get("sha") == sha


@pytest.fixture
def site(clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[LimenCluster, WorkTree]:
    work = WorkTree(tmp_path_factory.mktemp("access"))
    for name in NAMES:
        work.write(f"roles/{name}.yaml", ROLE.format(name=name))
    work.commit("Twelve teams")
    return clusters("prune", "--gitops", str(work.path), "--gitops-interval", "1s"), work


def test_a_commit_deleting_everything_is_refused_until_allowed(
        site: tuple[LimenCluster, WorkTree]) -> None:
    lm, work = site
    assert git_roles(lm) == NAMES
    for name in NAMES:
        work.remove(f"roles/{name}.yaml")
    work.write("README.md", "moved elsewhere\n")
    sha = work.commit("Remove everything")
    wait_for(lambda: attempted(lm, sha), DEADLINE, "the sync to attempt the empty commit")

    last = status(lm)["last_attempt"]
    assert last["ok"] is False
    assert "would delete all 12 objects" in last["errors"][0]
    shown = lm.lmctl("gitops", "status")
    assert "REJECTED" in shown.stdout, describe(shown)
    assert "Limen-Allow-Prune: yes" in shown.stdout, describe(shown)
    assert git_roles(lm) == NAMES  # nothing applied
    [rejected] = [e for e in lm.audit("gitops.rejected") if e["sha"] == sha]
    assert "would delete all 12 objects" in rejected["errors"][0]
    assert not [e for e in lm.audit("role.deleted")]

    allowed = work.commit("Empty the cluster on purpose\n\nLimen-Allow-Prune: yes\n")
    wait_for(lambda: (status(lm).get("live") or {}).get("sha") == allowed, DEADLINE,
             "the allowed commit to be applied")
    assert git_roles(lm) == []
    assert len(lm.audit("role.deleted")) == 12
    assert_no_traceback(lm)
