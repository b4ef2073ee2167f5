"""Attack: symbolic links in an access repository point outside it.

A pull request (or anyone who can write the directory) commits ``roles/passwd.yaml ->
/etc/passwd`` and ``linked/ -> /some/other/dir`` holding a Role. Before the fix, ``lmctl
gitops plan`` printed /etc/passwd's first line in its error output and ``lmctl apply -f DIR``
created the Role from the linked directory. Every reader of a directory — ``lmctl gitops
plan``, ``lmctl apply -f`` and the sync of a plain directory — must skip links (files and
directories), name each one in a warning, and never show what they point to.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from integration.cluster import LimenCluster, clean_env, command, run, wait_for

from .attacks import assert_no_traceback, write

ROLE = ("apiVersion: limen.dev/v1alpha1\nkind: Role\nmetadata: {{name: {name}}}\n"
        "spec: {{allow: {{logins: [{name}]}}}}\n")
SECRET = "root:x:0:0:secret-marker-41c7:/root:/bin/bash\n"
LINKS = ("linked/", "roles/dangling.yml", "roles/passwd.yaml", "roles/secret.yaml")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """An access directory with one real Role and four links out of it."""
    outside = tmp_path / "outside"
    write(outside, "secret.yaml", SECRET)
    write(outside, "dir/evil.yaml", ROLE.format(name="linked-evil"))
    root = tmp_path / "access"
    write(root, "roles/dev.yaml", ROLE.format(name="real-dev"))
    os.symlink("/etc/passwd", root / "roles" / "passwd.yaml")
    os.symlink(outside / "secret.yaml", root / "roles" / "secret.yaml")
    os.symlink(tmp_path / "missing.yaml", root / "roles" / "dangling.yml")
    os.symlink(outside / "dir", root / "linked")
    return root


def assert_links_named_not_followed(stderr: str) -> None:
    for link in LINKS:
        assert f"warning: {link}: a symbolic link, skipped" in stderr, stderr
    assert "secret-marker" not in stderr
    assert "root:x:" not in stderr
    assert "outside" not in stderr  # not even where they point


def test_gitops_plan_skips_links_and_never_prints_their_targets(repo: Path) -> None:
    result = run([command("lmctl"), "gitops", "plan", repo], env=clean_env())
    assert result.returncode == 0
    assert "Role/real-dev created" in result.stdout
    assert "linked-evil" not in result.stdout
    assert "secret-marker" not in result.stdout
    assert "root:x:" not in result.stdout
    assert_links_named_not_followed(result.stderr)


def test_apply_directory_skips_links(cluster: LimenCluster, repo: Path) -> None:
    result = cluster.lmctl("apply", "-f", repo)
    assert result.stdout.splitlines() == ["role/real-dev created"]
    assert_links_named_not_followed(result.stderr)
    names = {doc["metadata"]["name"] for doc in cluster.lmctl_json("get", "roles")["items"]}
    assert "real-dev" in names
    assert "linked-evil" not in names
    assert cluster.lmctl("get", "role/linked-evil", check=False).returncode == 1
    assert_no_traceback(cluster)


def test_directory_sync_skips_links(tmp_path: Path, repo: Path) -> None:
    synced = LimenCluster(tmp_path / "synced", extra_args=["--gitops", str(repo),
                                                           "--gitops-interval", "1s"])
    try:
        synced.start()

        def roles() -> set[str]:
            return {doc["metadata"]["name"] for doc in synced.lmctl_json("get", "roles")["items"]}

        wait_for(lambda: "real-dev" in roles(), 30, "the sync to apply roles/dev.yaml")
        assert "linked-evil" not in roles()
        output = synced.output()
        for link in LINKS:
            assert f"{link}: a symbolic link, skipped" in output
            assert output.count(f"{link}: a symbolic link, skipped") == 1
        assert "secret-marker" not in output
        assert_no_traceback(synced)
        synced.stop()
    finally:
        synced.kill()
