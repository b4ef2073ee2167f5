"""Where the sync reads its documents from, decided once from ``gitops.source`` and ``path``.

======================================  ===================================================
``gitops.source``                       what is synced
======================================  ===================================================
URL: ``https://``, ``http://``,         the branch tip of that repository, via a private
``ssh://``, ``git://``, ``file://``,    bare clone in DATA_DIR/gitops/repo (``GitRepository``)
``user@host:path``
a local repository (bare, or the root   the same: the committed content of the branch tip
of a work tree)
a directory inside a Git work tree      the committed content of that sub-directory at the
that Git tracks (``examples/gitops``)   tip of the branch of the enclosing repository;
                                        uncommitted edits are ignored
any other directory (not in Git, or     the files on disk (``DirectorySource``): polled by
untracked)                              content hash, recorded as ``working tree``
======================================  ===================================================

``gitops.path`` is a sub-directory below that. Called by ``limen.gitops.sync``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import git

from limen.api.access_request_review import without_reviews
from limen.api.loader import MAX_FILE_BYTES, SourceDocument, load_path, yaml_files
from limen.api.resources import Resource
from limen.api.validation import validate
from limen.config import GitOpsSettings
from limen.errors import BadParameter, NotFound
from limen.gitops.credentials import (
    Credentials,
    load_credentials,
    redact_url,
    split_url_credentials,
)
from limen.gitops.loading import ValidatedFiles
from limen.gitops.prune_guard import ALLOW_FILE, trailer_allows
from limen.gitops.repository import GitRepository, Revision, normalize_subpath
from limen.gitops.review_merge import Merge

__all__ = [
    "WORKING_TREE",
    "DirectorySource",
    "Source",
    "SourceLocation",
    "locate_source",
    "open_source",
]

log = logging.getLogger(__name__)

WORKING_TREE = "working tree"
"""The ``sha`` recorded for a directory source."""
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_SCP_LIKE = re.compile(r"^[^/\s]+:")


class Source(Protocol):
    """A place documents come from; every method blocks (call it from a worker thread)."""

    display: str
    """Safe to log and store: no credentials."""
    mode: str
    """``git`` or ``directory``."""

    def poll(self) -> Revision:
        """The current revision (fetching first, for Git)."""
        ...

    def load(self, revision: Revision) -> tuple[list[SourceDocument], list[Resource]]:
        """Every document of ``revision`` and, all being valid, their Resources; else
        ``ValidationFailed`` with every error (``NotFound`` when the directory is gone)."""
        ...

    def close(self) -> None: ...

    def allows_prune(self, revision: Revision) -> bool:
        """Does ``revision`` allow a big prune or an empty tree (``limen.gitops.prune_guard``:
        the ``limen-allow-prune`` file, or the commit trailer)?"""
        ...


@dataclass(frozen=True)
class SourceLocation:
    mode: str
    """``git`` or ``directory``."""
    remote: str
    """What ``git fetch`` reads (no credentials), or the directory to read."""
    subpath: str
    """The documents' directory inside the repository (``git`` mode)."""
    display: str
    url_credentials: Credentials | None = None
    note: str = ""
    """Why this mode, for the start-up log line."""


def locate_source(source: str, path: str = "") -> SourceLocation:
    """Classify ``source`` as the table in the module docstring says."""
    text = source.strip()
    if not text:
        raise BadParameter("the GitOps source is empty")
    if text.startswith("-"):
        raise BadParameter(f"invalid GitOps source {text!r}")
    if _URL.match(text) or (_SCP_LIKE.match(text) and not Path(text).exists()):
        remote, creds = split_url_credentials(text)
        return SourceLocation("git", remote, normalize_subpath(path), redact_url(text), creds,
                              "the branch tip of a remote repository")
    directory = Path(text).expanduser()
    if not directory.is_dir():
        raise BadParameter(f"GitOps source {text}: no such directory (give a directory, a "
                           "repository path or a URL)")
    directory = directory.resolve()
    try:
        repo = git.Repo(directory, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return _directory(text, directory, path, "not in a Git repository")
    try:
        if repo.bare:
            return SourceLocation("git", str(directory), normalize_subpath(path), text,
                                  note="the branch tip of a bare repository")
        top = Path(str(repo.working_tree_dir)).resolve()
        inside = directory.relative_to(top).as_posix()
        if inside in ("", "."):
            return SourceLocation("git", str(top), normalize_subpath(path), text,
                                  note="the branch tip of a local repository")
        if not repo.git.ls_files("--", inside):
            return _directory(text, directory, path, f"not tracked by the Git repository {top}")
        return SourceLocation("git", str(top), normalize_subpath(inside, path), text,
                              note=f"the committed content of {inside}/ at the branch tip of "
                                   f"{top} (uncommitted edits are ignored)")
    finally:
        repo.close()


def _directory(text: str, directory: Path, path: str, why: str) -> SourceLocation:
    target = directory / normalize_subpath(path) if path else directory
    return SourceLocation("directory", str(target), "", text,
                          note=f"the files on disk ({why}), polled by content hash")


def open_source(settings: GitOpsSettings, workdir: Path,
                env: Mapping[str, str] | None = None) -> tuple[Source, SourceLocation]:
    """The source the settings describe; ``workdir`` is DATA_DIR/gitops (created 0700)."""
    location = locate_source(settings.source, settings.path)
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(workdir, 0o700)
    if location.mode == "directory":
        return DirectorySource(Path(location.remote), location.display), location
    credentials = load_credentials(settings.credentials_file,
                                   os.environ if env is None else env,
                                   location.url_credentials)
    repository = GitRepository(location.remote, settings.branch, location.subpath, workdir,
                               credentials=credentials, display=location.display, env=env)
    return _GitSource(repository), location


class _GitSource:
    """A repository's commits; files unchanged since the last commit are not validated again."""

    mode = "git"

    def __init__(self, repository: GitRepository) -> None:
        self.repository = repository
        self.display = repository.display
        self.validated = ValidatedFiles()

    def poll(self) -> Revision:
        return self.repository.poll()

    def load(self, revision: Revision) -> tuple[list[SourceDocument], list[Resource]]:
        return self.validated.load(self.repository.files(revision))

    def merge_of(self, revision: Revision, name: str, signers_file: str = "") -> Merge:
        """Who merged file ``name`` (``limen.gitops.reviews``: the reviewer of a review)."""
        return self.repository.merge_of(revision, name, signers_file)

    def allows_prune(self, revision: Revision) -> bool:
        return (trailer_allows(self.repository.full_message(revision))
                or self.repository.has_file(revision, ALLOW_FILE))

    def close(self) -> None:
        self.repository.close()


class DirectorySource:
    """The YAML files of a directory as they are on disk; the revision is their content hash.

    Symbolic links are skipped, as in a Git source (``limen.api.loader.yaml_files``); each
    skipped link is logged once as a warning naming it."""

    mode = "directory"

    def __init__(self, directory: Path, display: str = "") -> None:
        self.directory = directory
        self.display = display or str(directory)
        self._warned: set[str] = set()

    def poll(self) -> Revision:
        if not self.directory.is_dir():
            raise NotFound(f"the GitOps directory {self.directory} does not exist")
        digest = hashlib.sha256()
        newest = 0.0
        for relative in yaml_files(self.directory).files:
            file = self.directory / relative
            try:
                info = file.lstat()
                newest = max(newest, info.st_mtime)
                if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_FILE_BYTES:
                    # never read: load refuses it by name (a FIFO, a huge file)
                    data = f"{info.st_mode} {info.st_size} {info.st_mtime_ns}".encode()
                else:
                    data = file.read_bytes()
            except OSError:
                continue  # removed meanwhile: the next poll sees the new state
            digest.update(relative.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
        when = datetime.fromtimestamp(newest, UTC).isoformat() if newest else ""
        return Revision(WORKING_TREE, time=when, message="files on disk",
                        content_hash=f"sha256:{digest.hexdigest()}")

    def load(self, revision: Revision) -> tuple[list[SourceDocument], list[Resource]]:
        if not self.directory.is_dir():
            raise NotFound(f"the GitOps directory {self.directory} does not exist")
        documents = load_path(self.directory, on_skipped_link=self._warn_once)
        return documents, validate(without_reviews(documents))

    def allows_prune(self, revision: Revision) -> bool:
        return (self.directory / ALLOW_FILE).is_file()

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log.warning("GitOps directory %s: %s", self.display, message)

    def close(self) -> None:
        return None

