"""Real Git repositories for the GitOps unit and end-to-end tests, made with the ``git`` command.

``WorkTree`` is a developer's clone (write files, commit, push, rewrite history); ``bare``
makes the shared repository the sync fetches from. Git runs with no global or system config,
so a developer's settings (signing, hooks, default branch) cannot change what the tests see.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GIT_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "LIMEN_"))},
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Ana Lyst", "GIT_AUTHOR_EMAIL": "ana@example.com",
    "GIT_COMMITTER_NAME": "Ana Lyst", "GIT_COMMITTER_EMAIL": "ana@example.com",
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True,
                            text=True, check=False, timeout=60)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


def bare(path: Path, branch: str = "main") -> Path:
    path.mkdir(parents=True)
    git(path, "init", "--quiet", "--bare", f"--initial-branch={branch}")
    return path


class WorkTree:
    def __init__(self, path: Path, remote: Path | None = None, branch: str = "main") -> None:
        self.path = path
        self.branch = branch
        path.mkdir(parents=True, exist_ok=True)
        git(path, "init", "--quiet", f"--initial-branch={branch}")
        if remote is not None:
            git(path, "remote", "add", "origin", str(remote))

    def write(self, relative: str, text: str) -> Path:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target

    def remove(self, relative: str) -> None:
        (self.path / relative).unlink()

    def commit(self, message: str = "change", *, push: bool = True,
               author: str | None = None) -> str:
        git(self.path, "add", "--all")
        args = ["commit", "--quiet", "--allow-empty", "-m", message]
        if author:
            args.append(f"--author={author}")
        git(self.path, *args)
        if push and git(self.path, "remote"):
            self.push()
        return self.head()

    def push(self, *, force: bool = False) -> None:
        git(self.path, "push", "--quiet", *(["--force"] if force else []), "origin",
            f"HEAD:refs/heads/{self.branch}")

    def head(self) -> str:
        return git(self.path, "rev-parse", "HEAD")

    def reset_hard(self, commit: str) -> None:
        git(self.path, "reset", "--quiet", "--hard", commit)


def role(name: str, *logins: str, annotations: dict[str, str] | None = None) -> str:
    """A valid Role document."""
    meta = f"  name: {name}\n"
    if annotations:
        meta += "  annotations:\n" + "".join(f"    {k}: '{v}'\n" for k, v in annotations.items())
    return ("apiVersion: limen.dev/v1alpha1\nkind: Role\nmetadata:\n" + meta +
            "spec:\n  allow:\n    logins: [" + ", ".join(logins) + "]\n")


def user(name: str, *roles: str) -> str:
    return ("apiVersion: limen.dev/v1alpha1\nkind: User\nmetadata:\n"
            f"  name: {name}\nspec:\n  roles: [{', '.join(roles)}]\n")
