"""Merging a branch as a given person in a real Git work tree, for the tests of access request
reviews merged in Git (``limen.gitops.reviews``): ``git_as`` runs ``git`` with an author and a
committer identity, ``merge_branch`` makes a branch that adds files and merges it with
``git merge --no-ff`` (the merger is the merge commit's author and committer)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gitops_git import GIT_ENV, git

Person = tuple[str, str]
"""(name, e-mail)."""


def git_as(cwd: Path, author: Person, *args: str, committer: Person | None = None) -> str:
    committer = committer or author
    env = {**GIT_ENV, "GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1],
           "GIT_COMMITTER_NAME": committer[0], "GIT_COMMITTER_EMAIL": committer[1]}
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def merge_branch(work: Path, branch: str, files: dict[str, str], *, author: Person,
                 merger: Person, main: str = "main", sign_with: Path | None = None) -> str:
    """Branch ``branch`` off ``main`` adds ``files`` (committed by ``author``); ``merger``
    merges it into ``main`` with ``git merge --no-ff`` (``sign_with``: an SSH private key
    file, ``-S`` with ``gpg.format=ssh``). The merge commit's sha (not pushed)."""
    git(work, "checkout", "--quiet", "-b", branch)
    for name, text in files.items():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    git_as(work, author, "add", "--all")
    git_as(work, author, "commit", "--quiet", "-m", f"Add {', '.join(files)}")
    git(work, "checkout", "--quiet", main)
    signing = (["-c", "gpg.format=ssh", "-c", f"user.signingkey={sign_with}"]
               if sign_with else [])
    git_as(work, merger, *signing, "merge", "--quiet", "--no-ff", *(["-S"] if sign_with else []),
           "-m", f"Merge {branch}", branch)
    return git(work, "rev-parse", "HEAD")


def ssh_key(path: Path) -> str:
    """A new Ed25519 key pair at ``path`` (``path.pub``); the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f",
                    str(path)], check=True, capture_output=True, timeout=30)
    return path.with_suffix(".pub").read_text(encoding="utf-8").strip()


def review_yaml(request_id: str, state: str = "APPROVED", reason: str = "INC-42 ok") -> str:
    """An AccessRequestReview document."""
    return ("apiVersion: limen.dev/v1alpha1\nkind: AccessRequestReview\n"
            f"metadata: {{name: review-{request_id}}}\n"
            f"spec: {{request_id: {request_id}, state: {state}, reason: '{reason}'}}\n")
