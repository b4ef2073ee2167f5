"""The Git side of the sync, on real repositories: fetching a branch, reading documents at a
commit, force-pushes, sub-paths, what is ignored, and how a source path is classified."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitops_git import WorkTree, bare, role
from limen.errors import BadParameter, ConnectionProblem, NotFound, ValidationFailed
from limen.gitops import repository
from limen.gitops.repository import (
    GitRepository,
    Revision,
    check_branch,
    documents_at_ref,
    normalize_subpath,
)
from limen.gitops.source import WORKING_TREE, DirectorySource, locate_source


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    return bare(tmp_path / "remote.git")


@pytest.fixture
def work(tmp_path: Path, remote: Path) -> WorkTree:
    return WorkTree(tmp_path / "work", remote)


@pytest.fixture
def clone(tmp_path: Path, remote: Path) -> Iterator[GitRepository]:
    repo = GitRepository(str(remote), "main", "", tmp_path / "sync")
    yield repo
    repo.close()


def logins(repo: GitRepository, revision: Revision) -> dict[str, list[str]]:
    return {d.data["metadata"]["name"]: d.data["spec"]["allow"]["logins"]
            for d in repo.documents(revision)}


def test_poll_returns_the_branch_tip_with_author_and_message(work: WorkTree,
                                                             clone: GitRepository) -> None:
    work.write("roles/dev.yaml", role("dev", "alice"))
    sha = work.commit("Add dev\n\nlong description", author="Bo Dee <bo@example.com>")

    tip = clone.poll()

    assert tip.sha == sha
    assert tip.author == "Bo Dee <bo@example.com>"
    assert tip.message == "Add dev"
    assert tip.time.startswith("20")
    assert "T" in tip.time
    assert (clone.clone_dir / "HEAD").exists()  # the private bare clone in DATA_DIR/gitops


def test_documents_are_read_at_any_fetched_commit(work: WorkTree, clone: GitRepository) -> None:
    work.write("roles/dev.yaml", role("dev", "alice"))
    first = clone_poll_after(work, clone)
    work.write("roles/dev.yaml", role("dev", "alice", "ubuntu"))
    work.write("roles/ops.yaml", role("ops", "root"))
    second = clone_poll_after(work, clone)

    assert logins(clone, second) == {"dev": ["alice", "ubuntu"], "ops": ["root"]}
    assert logins(clone, first) == {"dev": ["alice"]}
    sources = sorted(d.source for d in clone.documents(second))
    assert sources == ["roles/dev.yaml", "roles/ops.yaml"]


def clone_poll_after(work: WorkTree, clone: GitRepository) -> Revision:
    sha = work.commit()
    tip = clone.poll()
    assert tip.sha == sha
    return tip


def test_force_push_to_an_older_commit_is_followed(work: WorkTree, clone: GitRepository) -> None:
    work.write("roles/dev.yaml", role("dev", "alice"))
    old = clone_poll_after(work, clone)
    work.write("roles/dev.yaml", role("dev", "mallory"))
    work.write("roles/evil.yaml", role("evil", "root"))
    clone_poll_after(work, clone)

    work.reset_hard(old.sha)
    work.push(force=True)
    assert clone.poll().sha == old.sha
    assert logins(clone, clone.poll()) == {"dev": ["alice"]}

    work.write("roles/dev.yaml", role("dev", "alice", "bob"))
    rewritten = work.commit("rewritten history", push=False)
    work.push(force=True)
    tip = clone.poll()
    assert tip.sha == rewritten
    assert logins(clone, tip) == {"dev": ["alice", "bob"]}


def test_subpath_hidden_entries_symlinks_and_other_files_are_ignored(
        tmp_path: Path, work: WorkTree, remote: Path) -> None:
    work.write("access/roles/dev.yaml", role("dev", "alice"))
    work.write("access/roles/extra.yml", role("extra", "x"))
    work.write("access/.github/ci.yaml", "not: a resource\n")
    work.write("access/README.md", "# docs\n")
    work.write("access/kustomization.yaml", "resources: []\n")
    work.write("elsewhere/other.yaml", role("other", "y"))
    secret = tmp_path / "outside.yaml"
    secret.write_text(role("leak", "root"), encoding="utf-8")
    os.symlink(secret, work.path / "access" / "link.yaml")
    tip = work.commit()
    repo = GitRepository(str(remote), "main", "access", tmp_path / "sync")
    try:
        assert repo.poll().sha == tip
        documents = repo.documents(repo.poll())
    finally:
        repo.close()
    assert sorted(d.source for d in documents) == ["roles/dev.yaml", "roles/extra.yml"]


def test_a_missing_subpath_is_an_error_not_an_empty_tree(tmp_path: Path, work: WorkTree,
                                                         remote: Path) -> None:
    work.write("access/roles/dev.yaml", role("dev", "alice"))
    work.commit()
    repo = GitRepository(str(remote), "main", "acces", tmp_path / "sync")
    try:
        with pytest.raises(NotFound, match="path 'acces' does not exist at commit"):
            repo.documents(repo.poll())
    finally:
        repo.close()


def test_an_empty_directory_tree_reads_as_no_documents(work: WorkTree,
                                                       clone: GitRepository) -> None:
    work.write("README.md", "nothing declared yet\n")
    assert clone.documents(clone_poll_after(work, clone)) == []


def test_unloadable_files_are_reported_with_their_names(work: WorkTree, clone: GitRepository,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    work.write("roles/dev.yaml", role("dev", "alice"))
    work.write("roles/broken.yaml", "kind: [unclosed\n")
    tip = clone_poll_after(work, clone)
    with pytest.raises(ValidationFailed) as raised:
        clone.documents(tip)
    assert [e.source for e in raised.value.errors] == ["roles/broken.yaml"]

    monkeypatch.setattr(repository, "MAX_FILE_BYTES", 10)
    with pytest.raises(ValidationFailed, match=r"roles/dev.yaml.*larger than"):
        clone.documents(tip)


def test_an_unknown_branch_and_an_unreachable_remote_are_clear_errors(
        tmp_path: Path, work: WorkTree, remote: Path) -> None:
    work.write("roles/dev.yaml", role("dev", "alice"))
    work.commit()
    missing_branch = GitRepository(str(remote), "release", "", tmp_path / "a")
    nowhere = GitRepository(str(tmp_path / "no-such-repo"), "main", "", tmp_path / "b")
    try:
        with pytest.raises(BadParameter, match=f"branch 'release' not found in {remote}"):
            missing_branch.poll()
        with pytest.raises(ConnectionProblem, match=r"cannot fetch .*no-such-repo"):
            nowhere.poll()
    finally:
        missing_branch.close()
        nowhere.close()


@pytest.mark.parametrize("name", ["-upload-pack=x", "a..b", "main.lock", "a b", "x/", ""])
def test_branch_names_that_are_not_plain_refs_are_refused(name: str) -> None:
    with pytest.raises(BadParameter, match="invalid GitOps branch"):
        check_branch(name)


def test_subpaths_are_joined_and_may_not_leave_the_repository() -> None:
    assert normalize_subpath("examples/gitops", "access/") == "examples/gitops/access"
    assert normalize_subpath("", "/") == ""
    with pytest.raises(BadParameter, match="inside the repository"):
        normalize_subpath("../etc")


def test_documents_at_a_ref_of_the_enclosing_repository(tmp_path: Path) -> None:
    work = WorkTree(tmp_path / "checkout")
    work.write("README.md", "access rules live in access/\n")
    before_access = work.commit()
    work.write("access/roles/dev.yaml", role("dev", "alice"))
    first = work.commit()
    work.write("access/roles/dev.yaml", role("dev", "alice", "ubuntu"))
    work.commit()

    at_first = documents_at_ref(work.path / "access", first)
    assert [d.data["spec"]["allow"]["logins"] for d in at_first] == [["alice"]]
    assert [d.source for d in at_first] == ["roles/dev.yaml"]
    assert documents_at_ref(work.path / "access", "HEAD~1") == at_first
    assert documents_at_ref(work.path / "access", before_access) == []
    with pytest.raises(BadParameter, match="neither a data directory nor a Git ref"):
        documents_at_ref(work.path / "access", "no-such-ref")
    with pytest.raises(BadParameter, match="not inside a Git repository"):
        documents_at_ref(tmp_path, "HEAD")


# -- classifying gitops.source --------------------------------------------------------------

def test_urls_are_remote_repositories_and_passwords_never_shown() -> None:
    location = locate_source("https://bot:hunter2@git.example.com/access.git", "access/")
    assert location.mode == "git"
    assert location.remote == "https://git.example.com/access.git"
    assert location.display == "https://bot:***@git.example.com/access.git"
    assert location.url_credentials is not None
    assert location.url_credentials.password == "hunter2"
    assert location.subpath == "access"
    assert locate_source("git@github.com:org/access.git").mode == "git"
    assert locate_source("file:///srv/access.git").remote == "file:///srv/access.git"


def test_a_bare_repository_or_a_work_tree_root_syncs_its_branch(tmp_path: Path,
                                                                 remote: Path) -> None:
    assert locate_source(str(remote)).mode == "git"
    assert locate_source(str(remote)).remote == str(remote.resolve())
    work = WorkTree(tmp_path / "work")
    located = locate_source(str(work.path), "access")
    assert (located.mode, located.remote, located.subpath) == (
        "git", str(work.path.resolve()), "access")


def test_a_tracked_directory_inside_a_work_tree_syncs_its_committed_content(
        tmp_path: Path) -> None:
    work = WorkTree(tmp_path / "project")
    work.write("examples/gitops/roles/dev.yaml", role("dev", "alice"))
    work.commit()
    (work.path / "scratch").mkdir()

    tracked = locate_source(str(work.path / "examples" / "gitops"), "roles")
    assert (tracked.mode, tracked.remote, tracked.subpath) == (
        "git", str(work.path.resolve()), "examples/gitops/roles")
    assert "uncommitted edits are ignored" in tracked.note

    untracked = locate_source(str(work.path / "scratch"))
    assert untracked.mode == "directory"
    assert untracked.remote == str((work.path / "scratch").resolve())


def test_a_directory_outside_git_is_read_from_disk_and_a_missing_one_refused(
        tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "access").mkdir(parents=True)
    located = locate_source(str(plain), "access")
    assert located.mode == "directory"
    assert located.remote == str((plain / "access").resolve())
    with pytest.raises(BadParameter, match="no such directory"):
        locate_source(str(tmp_path / "missing"))
    with pytest.raises(BadParameter, match="invalid GitOps source"):
        locate_source("--upload-pack=touch /tmp/x")


def test_a_directory_source_changes_revision_exactly_when_a_document_changes(
        tmp_path: Path) -> None:
    directory = tmp_path / "access"
    (directory / "roles").mkdir(parents=True)
    (directory / "roles" / "dev.yaml").write_text(role("dev", "alice"), encoding="utf-8")
    source = DirectorySource(directory)

    first = source.poll()
    assert first.sha == WORKING_TREE
    assert first.content_hash.startswith("sha256:")
    (directory / "notes.txt").write_text("not a document\n", encoding="utf-8")
    assert source.poll() == first
    (directory / "roles" / "dev.yaml").write_text(role("dev", "bob"), encoding="utf-8")
    second = source.poll()
    assert second.key != first.key
    documents, resources = source.load(second)
    assert [d.data["spec"]["allow"]["logins"] for d in documents] == [["bob"]]
    assert [r.name for r in resources] == ["dev"]
