"""Who merged a file: the commit of the branch's first-parent history that last added or changed
it, and the identity that made that commit part of the branch.

::

    git log -1 --first-parent --diff-merges=first-parent --no-renames --diff-filter=AM TIP -- PATH
        (--format=%H --no-patch: the sha alone)
        │  the newest commit on the branch itself (not inside a merged branch) whose diff
        │  against its first parent adds or changes PATH
        ▼
    a merge commit (two or more parents) ─▶ its AUTHOR: ``git merge`` and GitHub's merge button
                                            both make the person who merged the author
    any other commit (pushed straight to the branch) ─▶ its COMMITTER

With an allowed signers file (``gitops.review_signers_file``, OpenSSH's format, what
``git verify-commit`` reads as ``gpg.ssh.allowedSignersFile``), the commit's SSH signature is
checked too (``%G?`` and ``%GS``): :attr:`Merge.signer` is the principal of the listed key that
made a good signature, empty otherwise; ``limen.gitops.reviews`` then requires it to be the
merger's e-mail, so a merger's identity cannot be written by someone else.

The last change, not the first addition: whoever changes a review document after it was
merged becomes its reviewer. Renames count as an addition (``--no-renames``). Blocking (runs
``git``); called by ``limen.gitops.repository.GitRepository.merge_of`` in the sync's worker
thread.
"""

from __future__ import annotations

from dataclasses import dataclass

import git

from limen.errors import NotFound

__all__ = ["Merge", "merge_of"]


@dataclass(frozen=True)
class Merge:
    """The commit that brought a file to the branch, and who did it."""

    sha: str
    name: str
    email: str
    merge_commit: bool
    """True: a merge commit (the merger is its author); False: a commit pushed straight to
    the branch (the merger is its committer)."""
    signer: str = ""
    """With an allowed signers file: the principal whose key made the commit's good
    signature (empty: unsigned, a bad signature or a key the file does not list)."""

    @property
    def who(self) -> str:
        return f"{self.name} <{self.email}>"


def merge_of(repo: git.Repo, tip: str, path: str, signers_file: str = "") -> Merge:
    """The commit of ``tip``'s first-parent history that last added or changed ``path`` (a
    path from the repository's root); ``NotFound`` when there is none. ``signers_file``: an
    allowed signers file to verify the commit's signature with (:attr:`Merge.signer`)."""
    sha = repo.git.log("-1", "--first-parent", "--diff-merges=first-parent", "--no-renames",
                       "--diff-filter=AM", "--format=%H", "--no-patch", tip, "--",
                       path).strip()
    if not sha:
        raise NotFound(f"no commit of the branch adds {path}")
    commit = repo.commit(sha)
    merged = len(commit.parents) >= 2
    actor = commit.author if merged else commit.committer
    signer = _signer(repo, commit.hexsha, signers_file) if signers_file else ""
    return Merge(commit.hexsha, str(actor.name or ""), str(actor.email or ""), merged, signer)


def _signer(repo: git.Repo, sha: str, signers_file: str) -> str:
    """The principal of the good signature of ``sha`` (``git verify-commit``'s check, by
    ``ssh-keygen -Y verify`` against ``signers_file``), or empty."""
    output = repo.git.execute(["git", "-c", f"gpg.ssh.allowedSignersFile={signers_file}",
                               "log", "-1", "--format=%G?%x00%GS", "--no-patch", sha])
    verdict, _, principal = str(output).strip().partition("\0")
    return principal.strip() if verdict == "G" else ""
