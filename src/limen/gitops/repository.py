"""The Git side of the sync: a private clone that follows one branch, and reading documents at
a commit.

::

    remote (path, file://, https://, ssh://)
        │  git fetch +refs/heads/BRANCH:refs/remotes/origin/BRANCH   (forced: force-pushes and
        ▼                                                             rewritten history follow)
    DATA_DIR/gitops/repo   (bare clone, private to the sync)
        │  ls-tree -r COMMIT -- PATH  +  one cat-file --batch for every YAML blob
        ▼
    blobs in memory ──▶ limen.api.loader.load_text per file (what load_path does per file)
        ──▶ SourceDocuments (roles/dev.yaml[0] ...)

Every call blocks (gitpython runs ``git``): the sync calls them in a worker thread. Reading
goes through Git's objects, never a checkout: symbolic links and submodules in the tree are
ignored (a symlink could point anywhere on the auth server's disk), and the documents are
exactly the committed ones. Credentials reach ``git`` only through its environment
(``limen.gitops.credentials``); messages are scrubbed of them before they are raised.

Called by ``limen.gitops.source`` (the sync's source) and ``lmctl gitops plan --against REF``
(:func:`documents_at_ref`).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import git

from limen.api.loader import MAX_FILE_BYTES, MAX_LOAD_BYTES, SourceDocument, load_text
from limen.errors import (
    BadParameter,
    ConnectionProblem,
    DocumentError,
    NotFound,
    ValidationFailed,
)
from limen.gitops.credentials import Credentials, git_environment, scrub_secrets
from limen.gitops.review_merge import Merge, merge_of

__all__ = [
    "ALLOWED_PROTOCOLS",
    "File",
    "GitRepository",
    "Revision",
    "check_branch",
    "documents_at_ref",
    "normalize_subpath",
    "parse_file",
    "read_documents",
    "read_files",
]

ALLOWED_PROTOCOLS = "file:git:http:https:ssh"
"""``GIT_ALLOW_PROTOCOL``: no ``ext::`` or other transports that run commands."""
FETCH_TIMEOUT = 120.0
"""Seconds a fetch may take before its ``git`` process is killed."""
_BRANCH = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._/-]*")
_REGULAR_FILE_MODES = ("100644", "100755")
_SUFFIXES = (".yaml", ".yml")
_SKIPPED = frozenset({"kustomization.yaml", "kustomization.yml"})


@dataclass(frozen=True)
class Revision:
    """What the sync applies: a commit, or (directory sources) a state of the files on disk."""

    sha: str
    """The commit SHA, or ``working tree`` for a directory source."""
    author: str = ""
    """``Name <email>`` of the commit's author."""
    time: str = ""
    """ISO 8601 time of the commit (committer time), or of the newest file."""
    message: str = ""
    """First line of the commit message."""
    content_hash: str = ""
    """``sha256:...`` of the files (directory sources only)."""

    @property
    def key(self) -> str:
        """Changes exactly when the content to apply may have changed."""
        return f"{self.sha} {self.content_hash}".strip()

    @property
    def short(self) -> str:
        return self.content_hash[:19] if self.content_hash else self.sha[:12]

    def to_dict(self) -> dict[str, str]:
        out = {"sha": self.sha, "author": self.author, "time": self.time,
               "message": self.message}
        if self.content_hash:
            out["content_hash"] = self.content_hash
        return out

    @classmethod
    def from_commit(cls, commit: git.Commit) -> Revision:
        summary = commit.summary
        return cls(
            sha=commit.hexsha,
            author=f"{commit.author.name} <{commit.author.email}>",
            time=commit.committed_datetime.isoformat(),
            message=summary.decode(errors="replace") if isinstance(summary, bytes) else summary,
        )


def check_branch(branch: str) -> str:
    """Refuse branch names that are not plain ref names (or could pass for an option)."""
    if (not _BRANCH.fullmatch(branch) or ".." in branch or branch.endswith((".lock", "/"))
            or "//" in branch):
        raise BadParameter(f"invalid GitOps branch name {branch!r}")
    return branch


def normalize_subpath(*parts: str) -> str:
    """Join repository sub-paths (``examples/gitops`` + ``access/``) into ``a/b``; no ``..``."""
    joined = PurePosixPath(*[p.strip("/") for p in parts if p and p.strip("/")])
    text = joined.as_posix()
    if text == ".":
        return ""
    if any(part in ("..", "") for part in joined.parts) or joined.is_absolute():
        raise BadParameter(f"invalid GitOps path {text!r}: use a path inside the repository")
    return text


class GitRepository:
    """A bare clone in ``workdir`` that follows ``branch`` of ``remote``; one thread at a time."""

    def __init__(self, remote: str, branch: str, subpath: str, workdir: Path, *,
                 credentials: Credentials | None = None, display: str = "",
                 env: Mapping[str, str] | None = None, timeout: float = FETCH_TIMEOUT) -> None:
        if remote.startswith("-"):
            raise BadParameter(f"invalid GitOps source {remote!r}")
        self.remote = remote
        self.branch = check_branch(branch)
        self.subpath = subpath
        self.workdir = workdir
        self.display = display or remote
        self.credentials = credentials
        self.timeout = timeout
        self._env = dict(git_environment(credentials, workdir, env))
        self._env["GIT_ALLOW_PROTOCOL"] = ALLOWED_PROTOCOLS
        self._repo: git.Repo | None = None

    @property
    def clone_dir(self) -> Path:
        return self.workdir / "repo"

    def _secrets(self) -> tuple[str, ...]:
        return self.credentials.secrets if self.credentials else ()

    def _open(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        path = self.clone_dir
        try:
            repo = git.Repo(path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            repo = git.Repo.init(path, bare=True)
        with repo.config_writer() as config:
            config.set_value('remote "origin"', "url", self.remote)
        self._repo = repo
        return repo

    def poll(self) -> Revision:
        """Fetch the branch (forced) and return its tip."""
        repo = self._open()
        ref = f"refs/remotes/origin/{self.branch}"
        try:
            repo.git.fetch("--no-tags", "--quiet", "origin", f"+refs/heads/{self.branch}:{ref}",
                           env=self._env, kill_after_timeout=self.timeout)
        except git.GitCommandError as err:
            raise self._fetch_error(err) from None
        return Revision.from_commit(repo.commit(ref))

    def _fetch_error(self, err: git.GitCommandError) -> Exception:
        stderr = err.stderr if isinstance(err.stderr, str) else str(err.stderr or "")
        lines = [line.strip().removeprefix("stderr:").strip(" '") for line in stderr.splitlines()]
        lines = [line for line in lines if line]
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))] or lines[-1:]
        reason = "; ".join(fatal) or f"git exited with status {err.status}"
        reason = scrub_secrets(reason, self._secrets())
        if "couldn't find remote ref" in reason:
            return BadParameter(f"branch {self.branch!r} not found in {self.display}")
        return ConnectionProblem(f"cannot fetch {self.display} (branch {self.branch}): {reason}")

    def documents(self, revision: Revision) -> list[SourceDocument]:
        return read_documents(self._open(), revision.sha, self.subpath)

    def files(self, revision: Revision) -> list[File]:
        return read_files(self._open(), revision.sha, self.subpath)

    def has_file(self, revision: Revision, name: str) -> bool:
        """Is there a regular file ``name`` at the top of the synced path at ``revision``?"""
        path = f"{self.subpath}/{name}" if self.subpath else name
        listing = self._open().git.ls_tree(revision.sha, "--", path)
        return any(line.split()[:2] in (["100644", "blob"], ["100755", "blob"])
                   for line in listing.splitlines())

    def merge_of(self, revision: Revision, name: str, signers_file: str = "") -> Merge:
        """Who brought file ``name`` (relative to the synced path) to the branch at
        ``revision``, the signature checked with ``signers_file`` when given
        (``limen.gitops.review_merge``)."""
        path = f"{self.subpath}/{name}" if self.subpath else name
        return merge_of(self._open(), revision.sha, path, signers_file)

    def full_message(self, revision: Revision) -> str:
        """The whole commit message (trailers included) of ``revision``."""
        message = self._open().commit(revision.sha).message
        return message.decode(errors="replace") if isinstance(message, bytes) else message

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None


@dataclass(frozen=True)
class File:
    """One YAML file of a commit: its path relative to the synced directory, its blob id."""

    path: str
    blob: str
    data: bytes = field(repr=False)


def read_files(repo: git.Repo, commit: str, subpath: str) -> list[File]:
    """The YAML files under ``subpath`` at ``commit`` that ``load_path`` would read on a
    checkout (hidden entries, ``kustomization.yaml``, symbolic links and submodules skipped),
    sorted by path, read with one ``git cat-file --batch``.

    Raises ``NotFound`` when ``subpath`` does not exist at that commit (a moved or mistyped
    directory must not look like "everything was deleted") and ``ValidationFailed`` for files
    over the loader's size limit, or files adding up to more than one load may read.
    """
    listing = repo.git.ls_tree("-r", "-z", "--long", "--full-tree", commit, "--",
                               subpath or ".")
    wanted: list[tuple[str, str]] = []
    errors: list[DocumentError] = []
    found_any = False
    total = 0
    for record in listing.split("\0"):
        if not record:
            continue
        found_any = True
        meta, _, path = record.partition("\t")
        mode, kind, sha, size = meta.split()
        relative = _relative(path, subpath)
        if (kind != "blob" or mode not in _REGULAR_FILE_MODES or not _is_document(relative)):
            continue
        if size.isdigit() and int(size) > MAX_FILE_BYTES:
            errors.append(DocumentError(relative, 0, "",
                                        f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB"))
            continue
        total += int(size) if size.isdigit() else 0
        if total > MAX_LOAD_BYTES and not errors:
            errors.append(DocumentError(relative, 0, "", "the files add up to more than "
                                        f"{MAX_LOAD_BYTES // (1024 * 1024)} MiB"))
        wanted.append((relative, sha))
    if not found_any and subpath:
        raise NotFound(f"path {subpath!r} does not exist at commit {commit[:12]}")
    if errors:
        raise ValidationFailed(errors)
    wanted.sort()
    blobs = _cat_blobs(repo, [sha for _, sha in wanted])
    return [File(path, sha, data) for (path, sha), data in zip(wanted, blobs, strict=True)]


def parse_file(file: File) -> list[SourceDocument]:
    """The documents of one file, exactly as ``load_path`` reads a file (``ValidationFailed``)."""
    try:
        text = file.data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValidationFailed([DocumentError(file.path, 0, "",
                                              f"cannot read the file: {err}")]) from None
    return load_text(text, file.path)


def read_documents(repo: git.Repo, commit: str, subpath: str) -> list[SourceDocument]:
    """Every YAML document under ``subpath`` at ``commit``, named relative to ``subpath``: the
    same documents, order, names and errors as ``load_path`` on a checkout of that directory
    (parsed in memory: no checkout, no temporary files). Errors as :func:`read_files`, plus
    every file that cannot be loaded."""
    documents: list[SourceDocument] = []
    errors: list[DocumentError] = []
    for file in read_files(repo, commit, subpath):
        try:
            documents.extend(parse_file(file))
        except ValidationFailed as err:
            errors.extend(err.errors)
    if errors:
        raise ValidationFailed(errors)
    return documents


def _relative(path: str, subpath: str) -> str:
    if not subpath:
        return path
    if path == subpath:  # subpath names a single file
        return PurePosixPath(path).name
    return path[len(subpath) + 1:]


def _is_document(relative: str) -> bool:
    parts = PurePosixPath(relative).parts
    return (bool(parts) and not any(p.startswith(".") for p in parts)
            and parts[-1].endswith(_SUFFIXES) and parts[-1] not in _SKIPPED)


def _cat_blobs(repo: git.Repo, shas: list[str]) -> list[bytes]:
    """The contents of ``shas``, read with one ``git cat-file --batch`` process."""
    if not shas:
        return []
    with tempfile.TemporaryFile() as requests:
        requests.write(("\n".join(shas) + "\n").encode())
        requests.seek(0)
        output: Any = repo.git.cat_file("--batch", istream=requests, stdout_as_string=False,
                                        strip_newline_in_stdout=False)
    assert isinstance(output, bytes)
    blobs: list[bytes] = []
    position = 0
    for _ in shas:
        newline = output.index(b"\n", position)
        header = output[position:newline].split()
        if len(header) != 3:
            raise BadParameter(f"cannot read object {header[0].decode(errors='replace')}")
        size = int(header[2])
        blobs.append(output[newline + 1:newline + 1 + size])
        position = newline + 1 + size + 1
    return blobs


def documents_at_ref(path: Path, ref: str) -> list[SourceDocument]:
    """The documents under ``path`` (a directory of a Git work tree) as committed at ``ref``;
    none when the directory does not exist at ``ref`` yet (a pull request that adds it)."""
    directory = path.resolve()
    try:
        repo = git.Repo(directory, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise BadParameter(f"{path} is not inside a Git repository: --against needs a data "
                           "directory or a Git ref of the repository holding PATH") from None
    try:
        if repo.working_tree_dir is None:
            raise BadParameter(f"{path} is a bare repository: give a directory of a checkout")
        subpath = normalize_subpath(directory.relative_to(
            Path(repo.working_tree_dir).resolve()).as_posix())
        if ref.startswith("-"):
            raise BadParameter(f"invalid Git ref {ref!r}")
        try:
            commit = repo.commit(ref)
        except (git.BadName, ValueError):
            raise BadParameter(f"{ref!r} is neither a data directory nor a Git ref of "
                               f"{repo.working_tree_dir}") from None
        try:
            return read_documents(repo, commit.hexsha, subpath)
        except NotFound:
            return []
    finally:
        repo.close()
