"""The README's "Using it" block, run line by line as a newcomer runs it.

A fresh Unix user (``lmreadme``, created for the module) gets a copy of this work tree as a Git
repository of its own, runs the README's first command (``scripts/start``: it creates the
virtualenv with the system Python and starts the single-node cluster with the demo repository),
then types every line of the "Using it" block, read from README.md itself so the two cannot
drift, into a shell on a real terminal. Prompts are answered as a person would (password, the
one-time code from the authenticator that the sign-up enrolled); the placeholders the README
shows (``<the link it printed>``, ``<cluster>``, ``<session-id>``) are filled from what the
earlier lines printed. Every line must exit 0.

The stock ``ssh`` lines read ``~/.ssh/config`` from the user's passwd home, which is why the
block runs as a real user rather than as root with another ``$HOME``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest

from .cluster import wait_for
from .terminal import Prompt, Terminal

REPO = Path(__file__).resolve().parents[2]
USER = "lmreadme"
PASSWORD = "correct horse battery staple 42"
START_TIMEOUT = 300.0
"""scripts/start creates a virtualenv and installs Limen from the package index first."""
LINE_TIMEOUT = 90.0
PLACEHOLDER = re.compile(r"<[^<>\n]+>")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

pytestmark = pytest.mark.timeout(900)


def readme_block(readme: str, heading: str = "## Using it") -> list[str]:
    """The command lines of the first ``sh`` block under ``heading`` (blank lines dropped)."""
    section = readme.split(heading, 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, f"README.md has no sh block under {heading!r}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_block_is_found_and_uses_only_known_placeholders() -> None:
    lines = readme_block((REPO / "README.md").read_text())
    assert lines[0].startswith(". .venv/bin/activate")
    assert {p for line in lines for p in PLACEHOLDER.findall(line.split("  #")[0])} <= set(
        Walk.FILLERS)


@dataclass
class Walk:
    """What the earlier lines printed, and the answers a person would type."""

    secret: str = ""
    last_step: int = 0
    outputs: list[str] = field(default_factory=list)

    FILLERS = ("<the link it printed>", "<cluster>", "<session-id>")

    def fill(self, line: str) -> str:
        everything = "\n".join(self.outputs)
        for placeholder in PLACEHOLDER.findall(line.split("  #")[0]):
            if placeholder == "<the link it printed>":
                value = re.findall(r"https://\S+/web/signup/\S+", everything)[-1]
            elif placeholder == "<cluster>":
                value = re.findall(r"^Cluster:\s+(\S+)", everything, re.MULTILINE)[-1]
            elif placeholder == "<session-id>":
                value = UUID.findall(self.outputs[-1])[0]
            else:
                raise AssertionError(f"README placeholder {placeholder} has no filler")
            line = line.replace(placeholder, value)
        return line

    def code(self, output: str) -> str:
        """The authenticator's code: for the step after the last one used (codes work once)."""
        if not self.secret:
            self.secret = re.findall(r"secret[:=]\s*([A-Z2-7]{16,})", output)[-1]
        step = max(int(time.time()) // 30, self.last_step + 1)
        self.last_step = step
        return pyotp.TOTP(self.secret).at(step * 30)

    def prompts(self) -> list[Prompt]:
        return [
            Prompt(re.compile(r"(New password|Repeat for confirmation|Password): $"),
                   lambda _output: PASSWORD),
            Prompt(re.compile(r"(?i)code[^\n:]*: $"), self.code),
        ]


@pytest.fixture(scope="module")
def newcomer() -> Iterator[tuple[pwd.struct_passwd, Path]]:
    """The Unix user ``lmreadme`` with a home of its own and a copy of this work tree."""
    if os.geteuid() != 0:
        pytest.fail("the README walk creates a Unix user: run the tests as root (as CI does)")
    base = Path(tempfile.mkdtemp(prefix="limen-readme-"))
    base.chmod(0o755)
    subprocess.run(["userdel", "-r", USER], capture_output=True, check=False)
    subprocess.run(["useradd", "-m", "-d", str(base / "home"), "-s", "/bin/bash", USER],
                   check=True)
    account = pwd.getpwnam(USER)
    repo = base / "limen"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], cwd=REPO, capture_output=True, check=True)
    for name in files.stdout.decode().split("\0"):
        source = REPO / name
        if name and source.is_file() and not source.is_symlink():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(repo)], check=True)
    as_user(account, ["git", "init", "-q", "-b", "main"], repo)
    as_user(account, ["git", "add", "-A"], repo)
    as_user(account, ["git", "commit", "-q", "-m", "Limen as a newcomer cloned it"], repo)
    try:
        yield account, repo
    finally:
        subprocess.run(["pkill", "-KILL", "-u", USER], check=False)
        subprocess.run(["userdel", "-r", USER], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def user_env(account: pwd.struct_passwd) -> dict[str, str]:
    return {"HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name,
            "SHELL": "/bin/bash", "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
            "TERM": "xterm-256color", "PS1": "", "PS2": "",
            "GIT_AUTHOR_NAME": "Newcomer", "GIT_AUTHOR_EMAIL": "newcomer@example.com",
            "GIT_COMMITTER_NAME": "Newcomer", "GIT_COMMITTER_EMAIL": "newcomer@example.com"}


def as_user(account: pwd.struct_passwd, argv: list[str], cwd: Path) -> None:
    subprocess.run(["runuser", "-u", account.pw_name, "--", "env", "-i",
                    *(f"{k}={v}" for k, v in user_env(account).items()), *argv],
                   cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def started(newcomer: tuple[pwd.struct_passwd, Path]) -> Iterator[tuple[pwd.struct_passwd, Path]]:
    """README command 1, ``scripts/start``, running as the newcomer."""
    account, repo = newcomer
    log = repo / "start.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["runuser", "-u", USER, "--", "env", "-i",
             *(f"{k}={v}" for k, v in user_env(account).items()), "scripts/start"],
            cwd=repo, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "limen is running" in log.read_text(errors="replace")
                 or process.poll() is not None, START_TIMEOUT, "scripts/start")
        assert process.poll() is None, f"scripts/start exited:\n{log.read_text()}"
        yield account, repo
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_every_line_of_the_readme_block_exits_0(
        started: tuple[pwd.struct_passwd, Path]) -> None:
    account, repo = started
    lines = readme_block((repo / "README.md").read_text())
    shell = ["runuser", "-u", USER, "--", "env", "-i",
             *(f"{k}={v}" for k, v in user_env(account).items()),
             "bash", "--norc", "--noprofile", "+H"]
    terminal = Terminal(shell, env=dict(os.environ), cwd=str(repo), owner=account.pw_uid)
    walk = Walk()
    try:
        for number, typed in enumerate(lines, 1):
            line = walk.fill(typed)
            status, output = terminal.run(line, f"__README_LINE_{number}", walk.prompts(),
                                          LINE_TIMEOUT)
            walk.outputs.append(output)
            assert status == 0, (f"README line {number} exited {status}: {line}\n{output}\n"
                                 f"--- scripts/start\n{(repo / 'start.log').read_text()[-4000:]}")
    finally:
        terminal.close()
    transcript = "\n".join(walk.outputs)
    assert transcript.count("load average") >= 4  # lmsh ssh, labels, -t, stock ssh, play
    assert "Logged in as: me" in transcript
