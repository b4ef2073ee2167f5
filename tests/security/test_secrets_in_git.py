"""Attack: secrets in the access repository are accepted when their field name looks harmless.

A pull request adds a user whose ``team`` trait is a GitHub token, an ``aws`` trait holding an
AWS secret key and an annotation named ``token``. Before the fix the commit was applied (the
values stored and shown by ``lmctl get``). Now, on a running ``limen start --gitops`` cluster:
the commit is rejected with file and field, ``lmctl gitops status`` says why, ``lmctl apply``
and the auth API refuse the same document, and no secret value appears in any output, status,
audit event or log. Fake secrets are built at run time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gitops_git import WorkTree
from integration.cluster import ClusterFactory, LimenCluster, describe, wait_for

from .attacks import assert_no_traceback, https_post

GHP = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0" + "P9o8N7m6L5k4J3i2"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
RANDOM = "q8Zr4Kx1Vn7Tb2Wm9Ps3"
SECRETS = (GHP, AWS_SECRET, RANDOM)
ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: dev}
spec: {allow: {logins: [dev]}}
"""
LEAK = f"""\
apiVersion: limen.dev/v1alpha1
kind: User
metadata:
  name: leaky
  annotations: {{token: {RANDOM}}}
spec:
  roles: [dev]
  traits:
    team: ['{GHP}']
    aws: ['{AWS_SECRET}']
"""
DEADLINE = 60.0


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text[-3000:]


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[LimenCluster, WorkTree]:
    work = WorkTree(tmp_path_factory.mktemp("access"))
    work.write("roles/dev.yaml", ROLE)
    work.commit("Dev role")
    return module_clusters("secrets", "--gitops", str(work.path),
                           "--gitops-interval", "1s"), work


def status(lm: LimenCluster) -> dict[str, Any]:
    data: dict[str, Any] = lm.lmctl_json("gitops", "status")
    return data


def test_a_commit_with_secrets_is_rejected_naming_fields_not_values(
        site: tuple[LimenCluster, WorkTree]) -> None:
    lm, work = site
    work.write("users/leaky.yaml", LEAK)
    sha = work.commit("Add leaky")
    wait_for(lambda: (status(lm).get("last_attempt") or {}).get("sha") == sha, DEADLINE,
             "the sync to attempt the leaking commit")
    last = status(lm)["last_attempt"]
    assert last["ok"] is False
    errors = "\n".join(last["errors"])
    assert "users/leaky.yaml[0] spec.traits.team[0]: looks like a GitHub token (ghp_…" in errors
    assert "users/leaky.yaml[0] spec.traits.aws[0]: looks like an AWS secret access key" in errors
    assert "users/leaky.yaml[0] metadata.annotations.token: looks like a secret" in errors
    assert_no_secret(errors)
    shown = lm.lmctl("gitops", "status")
    assert "spec.traits.team[0]" in shown.stdout, describe(shown)
    assert_no_secret(shown.stdout + shown.stderr)
    [rejected] = [e for e in lm.audit("gitops.rejected") if e["sha"] == sha]
    assert any("spec.traits.team[0]" in e for e in rejected["errors"])
    users = lm.lmctl("get", "users", "-o", "yaml")
    assert "leaky" not in users.stdout
    for file in (lm.data_dir / "log" / "events").glob("*.jsonl"):
        assert_no_secret(file.read_text())
    assert_no_secret(lm.output())
    assert_no_traceback(lm)


def test_lmctl_apply_and_the_auth_api_refuse_the_same_document(
        site: tuple[LimenCluster, WorkTree], tmp_path: Path) -> None:
    lm, _ = site
    leak = tmp_path / "leaky.yaml"
    leak.write_text(LEAK)
    result = lm.lmctl("apply", "-f", leak, check=False)
    assert result.returncode != 0, describe(result)
    assert "spec.traits.team[0]: looks like a GitHub token" in result.stderr, describe(result)
    assert_no_secret(result.stdout + result.stderr)

    document = {"apiVersion": "limen.dev/v1alpha1", "kind": "User",
                "metadata": {"name": "leaky", "labels": {"token": RANDOM}},
                "spec": {"roles": ["dev"], "traits": {"team": [GHP]}}}
    body = json.dumps({"documents": [document]}).encode()
    code, answer = https_post(lm, lm.auth, "/v1/resources/apply", body, client_cert=True)
    assert code == 400, answer
    assert "GitHub token" in str(answer)
    assert "metadata.labels.token" in str(answer)
    assert_no_secret(str(answer))
    assert "leaky" not in lm.lmctl("get", "users").stdout
