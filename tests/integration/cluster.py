"""Real Limen processes for end-to-end tests: ``limen start`` clusters, ``lmctl``, ``lmsh`` users
and ``ssh-agent``, each driven as a subprocess exactly as a person or a script would::

    test ─▶ LimenCluster.start() ──spawn──▶ limen start --data-dir D --random-ports ...
            (waits for D/listeners.json)         ├─ auth  (mTLS)  ◀── lmctl --data-dir D
                                                 └─ web   (HTTPS) ◀── lmsh --proxy WEB
    test ─▶ cluster.lmctl(...)   ──spawn──▶ lmctl --data-dir D ...
    test ─▶ LimenUser.login()    ──spawn──▶ lmsh login ...   (own LIMEN_HOME, TOTP via pyotp)
    test ─▶ SshAgent.start()     ──spawn──▶ ssh-agent -D -a SOCK

Nothing of Limen is mocked or imported here: the commands are the console scripts installed
next to the running interpreter (``Path(sys.executable).parent``), so the tests run from the
virtualenv without PATH tricks. Every child gets a clean environment (no ``LIMEN_*`` settings and
no ``SSH_AUTH_SOCK`` leak in from the developer's shell). Waiting is always polling a condition
with a deadline (:func:`wait_for`), never a bare sleep.

Used by the fixtures in ``tests/integration/conftest.py`` and by every integration test that
needs a running cluster (foundation, login, and later GitOps, SSH and trusted clusters).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pyotp

__all__ = [
    "BIN_DIR",
    "ClusterFactory",
    "CommandFailed",
    "LimenCluster",
    "LimenUser",
    "SshAgent",
    "SshCertificate",
    "clean_env",
    "command",
    "describe",
    "inspect_ssh_cert",
    "run",
    "ssh_fingerprint",
    "tree_modes",
    "wait_for",
]

T = TypeVar("T")

BIN_DIR = Path(sys.executable).parent
"""Where the virtualenv's console scripts (``limen``, ``lmctl``, ``lmsh``) live."""
START_TIMEOUT = 30.0
"""Seconds ``limen start`` may take to write listeners.json (CAs are created on first start)."""
STOP_TIMEOUT = 15.0
"""Seconds ``limen start`` may take to exit after SIGTERM."""
COMMAND_TIMEOUT = 60.0
"""Seconds any one ``lmctl`` / ``lmsh`` / ``ssh-*`` command may take."""
TOTP_STEP = 30


class CommandFailed(AssertionError):
    """A command exited with an unexpected code; the message shows its output."""


def command(name: str) -> str:
    """The path of the console script ``name`` installed next to this interpreter."""
    path = BIN_DIR / name
    assert path.exists(), f"{path} is missing: install the project into the virtualenv"
    return str(path)


def clean_env(**overrides: str | os.PathLike[str] | None) -> dict[str, str]:
    """This process's environment without Limen settings or an ssh-agent, plus ``overrides``
    (a ``None`` value removes the variable)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LIMEN_") and k not in {"SSH_AUTH_SOCK", "SSH_AGENT_PID"}}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = os.fspath(value)
    return env


def run(args: Iterable[str | os.PathLike[str]], *, env: Mapping[str, str],
        input: str | None = None, check: bool = True,
        timeout: float = COMMAND_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; with ``check``, raise :class:`CommandFailed` (showing the
    command, exit code, stdout and stderr) unless it exits 0."""
    argv = [os.fspath(a) for a in args]
    result = subprocess.run(argv, env=dict(env), input=input, capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise CommandFailed(describe(result))
    return result


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A readable account of a finished command, for assertion messages."""
    return (f"$ {' '.join(map(str, result.args))}\nexit code {result.returncode}\n"
            f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0,
             message: str = "the condition", interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` seconds
    pass (``AssertionError`` naming ``message``; it is asked once more at the deadline).

    A predicate that takes longer than ``interval`` (one that runs ``lmctl`` or ``lmsh``, about
    0.25 s of CPU each) is asked at most half the time: the test's polling leaves the CPU to
    the cluster it waits for."""
    deadline = time.monotonic() + timeout
    while True:
        asked = time.monotonic()
        value = predicate()
        if value:
            return value
        now = time.monotonic()
        if now >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(min(max(interval, now - asked), deadline - now))


def tree_modes(root: Path) -> dict[str, int]:
    """Every path under ``root`` (relative; directories end with ``/``) and its permission bits,
    ``root`` itself as ``./``."""
    modes = {"./": root.stat().st_mode & 0o777}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix() + ("/" if path.is_dir() else "")
        modes[name] = path.stat().st_mode & 0o777
    return modes


class LimenCluster:
    """One ``limen start`` process in its own process group, with its data directory.

    ``root`` holds ``data/`` (the ``--data-dir``), ``home/`` (the daemon's ``LIMEN_HOME``),
    ``users/<name>/`` (the ``LIMEN_HOME`` of each :class:`LimenUser`) and the daemon's
    ``limen.out`` / ``limen.err``. Start with :meth:`start`; :meth:`stop` is SIGTERM and
    asserts the clean exit (code 0) the daemon promises. A cluster never started is just a data
    directory: its :meth:`lmctl` then takes lmctl's offline (bootstrap) path.
    """

    def __init__(self, root: Path, name: str = "test", extra_args: Iterable[str] = (), *,
                 data_dir: Path | None = None, random_ports: bool = True) -> None:
        self.root = root
        self.random_ports = random_ports
        self.name = name
        self.extra_args = list(extra_args)
        self.data_dir = data_dir or root / "data"
        self.home = root / "home"
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        return clean_env(LIMEN_HOME=self.home)

    def start(self, timeout: float = START_TIMEOUT) -> LimenCluster:
        """Spawn ``limen start`` and wait until every listener is up (listeners.json); also
        after :meth:`kill` or :meth:`stop` (a restart on the same data directory)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(mode=0o700, exist_ok=True)
        self.listeners_path.unlink(missing_ok=True)  # a killed daemon leaves its own behind
        self.returncode = None
        argv = [command("limen"), "start", "--data-dir", str(self.data_dir),
                *(["--random-ports"] if self.random_ports else []),
                "--cluster-name", self.name, *self.extra_args]
        with (self.root / "limen.out").open("ab") as out, \
                (self.root / "limen.err").open("ab") as err:
            self.process = subprocess.Popen(argv, env=self.env, stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_for(self._ready, timeout, f"{self.data_dir}/listeners.json of cluster {self.name}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            self.returncode = self.process.returncode
            raise AssertionError(f"limen start exited with {self.returncode} before it was "
                                 f"ready\n{self.output()}")
        return self.listeners_path.exists()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, wait, and assert exit code 0 (idempotent; returns the exit code)."""
        if self.process is None or self.returncode is not None:
            return self.returncode if self.returncode is not None else 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"limen start did not stop within {timeout:g}s of "
                                     f"SIGTERM\n{self.output()}") from None
        self.returncode = self.process.returncode
        assert self.returncode == 0, (f"limen start exited with {self.returncode} after "
                                      f"SIGTERM\n{self.output()}")
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (no clean stop: for teardown after a failure)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT)
        self.returncode = self.process.returncode

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        """What the daemon printed so far (stdout, then stderr)."""
        parts = []
        for stream in ("out", "err"):
            path = self.root / f"limen.{stream}"
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- limen start std{stream} ({self.name})\n{text}")
        return "".join(parts)

    # -- addresses -----------------------------------------------------------------------
    @property
    def listeners_path(self) -> Path:
        return self.data_dir / "listeners.json"

    @property
    def listeners(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.listeners_path.read_text(encoding="utf-8"))
        return data

    @property
    def web(self) -> str:
        """The proxy's web address ``host:port`` (what ``lmsh --proxy`` takes)."""
        return self.listeners["web"]

    @property
    def auth(self) -> str:
        return self.listeners["auth"]

    # -- lmctl ---------------------------------------------------------------------------
    def lmctl(self, *args: str | os.PathLike[str], input: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """``lmctl --data-dir DATA_DIR ARGS...``."""
        return run([command("lmctl"), "--data-dir", self.data_dir, *args], env=self.env,
                   input=input, check=check)

    def lmctl_json(self, *args: str | os.PathLike[str]) -> Any:
        """``lmctl ... -o json``, parsed."""
        return json.loads(self.lmctl(*args, "-o", "json").stdout)

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.lmctl_json("status")
        return result

    def audit(self, *event_types: str, user: str | None = None) -> list[dict[str, Any]]:
        """``lmctl audit search --type T... [--user U] -o json``: matching events, oldest
        first."""
        args = ["audit", "search"]
        for event_type in event_types:
            args += ["--type", event_type]
        if user:
            args += ["--user", user]
        listed = self.lmctl_json(*args)  # a List, newest first (what lmctl prints)
        events: list[dict[str, Any]] = list(reversed(listed["items"]))
        return events

    # -- users ---------------------------------------------------------------------------
    def add_user(self, name: str, roles: Iterable[str] = ("dev",), logins: Iterable[str] = (),
                 ttl: str | None = None) -> dict[str, str]:
        """``lmctl users add NAME --roles ... -o json``: ``{"url", "token"}`` of the link."""
        args = ["users", "add", name, "--roles", ",".join(roles)]
        if logins:
            args += ["--logins", ",".join(logins)]
        if ttl:
            args += ["--ttl", ttl]
        link: dict[str, str] = self.lmctl_json(*args)
        return link

    def user(self, name: str, password: str | None = None) -> LimenUser:
        """A :class:`LimenUser` with its own ``LIMEN_HOME`` under this cluster's root."""
        return LimenUser(name, self.root / "users" / name, self.web, password=password)

    def signed_up_user(self, name: str, roles: Iterable[str] = ("dev",),
                       logins: Iterable[str] = ()) -> LimenUser:
        """Add ``name`` and sign up with the link (CA pinned from the link, TOTP enrolled)."""
        user = self.user(name)
        user.signup(self.add_user(name, roles, logins)["url"])
        return user

    def signed_up_users(self, *names: str, roles: Iterable[str] = ("dev",)) -> list[LimenUser]:
        """:meth:`signed_up_user` for several people at once (in parallel: each is three CLI
        runs), each with the login trait of their own name."""
        role_list = list(roles)
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda n: self.signed_up_user(n, role_list, [n]), names))


class ClusterFactory:
    """Starts clusters under one directory and stops them all on :meth:`close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clusters: list[LimenCluster] = []

    def __call__(self, name: str = "test", *extra_args: str) -> LimenCluster:
        cluster = LimenCluster(self.root / f"{name}-{len(self.clusters)}", name, extra_args)
        self.clusters.append(cluster)
        return cluster.start()

    def close(self) -> None:
        """Stop every cluster (SIGTERM); raise after all stopped if one did not exit 0."""
        problems = []
        for cluster in self.clusters:
            try:
                cluster.stop()
            except AssertionError as err:
                cluster.kill()
                problems.append(str(err))
        if problems:
            raise AssertionError("\n".join(problems))


class LimenUser:
    """A person using ``lmsh`` with their own ``LIMEN_HOME``; remembers the TOTP secret from
    sign-up and computes one-time codes with pyotp, never reusing a time step (a code works
    once: the next login uses the next step, waiting for the clock only when needed)."""

    def __init__(self, name: str, home: Path, proxy: str, *, password: str | None = None,
                 ssh_auth_sock: Path | None = None) -> None:
        self.name = name
        self.home = home
        self.proxy = proxy
        self.password = password or f"{name}-correct-horse-battery"
        self.ssh_auth_sock = ssh_auth_sock
        self.totp_secret: str | None = None
        self.signup_link: str | None = None
        """The link of the last successful sign-up."""
        self.last_code: str | None = None
        self._last_step = -1

    @property
    def env(self) -> dict[str, str]:
        return clean_env(LIMEN_HOME=self.home, SSH_AUTH_SOCK=self.ssh_auth_sock)

    def lmsh(self, *args: str, input: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([command("lmsh"), *args], env=self.env, input=input, check=check)

    def signup(self, link: str, *, insecure: bool = False,
               check: bool = True) -> subprocess.CompletedProcess[str]:
        """The scripted sign-up: ``lmsh signup --link URL --show-totp -o json`` (the TOTP
        secret to enrol), then ``lmsh signup --link URL --password-stdin --otp CODE -o json``
        with the current code of that secret; keeps the secret. Returns the run that failed,
        or the second."""
        flags = ["--insecure"] if insecure else []
        shown = self.lmsh("signup", "--link", link, "--show-totp", "-o", "json", *flags,
                          check=check)
        if shown.returncode != 0:
            return shown
        secret = json.loads(shown.stdout)["totp_secret"]
        step = earliest_safe_step()  # the step before now: later ones stay for logins
        code = pyotp.TOTP(secret).at(step * TOTP_STEP)
        result = self.lmsh("signup", "--link", link, "--password-stdin", "--otp", code,
                           "-o", "json", *flags, input=self.password + "\n", check=check)
        if result.returncode == 0:
            answer = json.loads(result.stdout)
            assert answer["user"] == self.name, answer
            assert answer["totp_secret"] == secret, answer
            self.signed_up(link, secret, step)
        return result

    def signed_up(self, link: str, totp_secret: str, step: int) -> None:
        """Remember a sign-up finished with the code of ``step`` (spent: logins use later
        steps), for sign-ups a test runs by hand."""
        self.totp_secret, self.signup_link, self._last_step = totp_secret, link, step

    # -- one-time codes ------------------------------------------------------------------
    def _totp(self) -> pyotp.TOTP:
        assert self.totp_secret, f"{self.name} has not signed up"
        return pyotp.TOTP(self.totp_secret)

    @property
    def spent_step(self) -> int:
        """The latest TOTP step whose code this user spent (-1: none yet)."""
        return self._last_step

    def next_code(self) -> tuple[int, str]:
        """(step, code) for the first time step not used yet that the server accepts now
        (the previous step, the current one or the next, within its ±1 step skew)."""
        step = max(earliest_safe_step(), self._last_step + 1)
        wait_for(lambda: _current_step() + 1 >= step, TOTP_STEP + 5.0,
                 f"TOTP step {step} of {self.name} to come within the accepted skew")
        return step, self._totp().at(step * TOTP_STEP)

    def take_code(self) -> str:
        """A fresh code for an ``lmsh`` command run by hand, counted as used (the next one
        comes from a later step)."""
        step, code = self.next_code()
        self._last_step = step
        return code

    def _step_of(self, code: str) -> int:
        now = _current_step()
        matches = [s for s in (now - 1, now, now + 1) if self._totp().at(s * TOTP_STEP) == code]
        return matches[-1] if matches else now + 1

    # -- lmsh commands -------------------------------------------------------------------
    def login(self, password: str | None = None, *, otp: str | None = None,
              ttl: str | None = None, proxy: str | None = None,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        """``lmsh login --proxy WEB --user NAME --password-stdin --otp CODE [--ttl T]`` (never
        --insecure: the CA pinned at sign-up is used). ``otp`` defaults to a fresh code."""
        step, code = self.next_code() if otp is None else (-1, otp)
        args = ["login", "--proxy", proxy or self.proxy, "--user", self.name,
                "--password-stdin", "--otp", code]
        if ttl:
            args += ["--ttl", ttl]
        result = self.lmsh(*args, input=(password or self.password) + "\n", check=check)
        if result.returncode == 0:
            self.last_code = code
            self._last_step = max(self._last_step, step if step >= 0 else self._step_of(code))
        return result

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(self.lmsh("status", "-o", "json").stdout)
        return answer

    def logout(self, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.lmsh("logout", check=check)

    # -- the state directory (docs/architecture.md, user state) ---------------------------------
    @property
    def key_dir(self) -> Path:
        return self.home / "keys" / self.proxy.replace(":", "_")

    def ssh_cert_path(self, cluster: str) -> Path:
        return self.key_dir / f"{self.name}-ssh" / f"{cluster}-cert.pub"


def _current_step() -> int:
    return int(time.time()) // TOTP_STEP


CODE_IN_FLIGHT = 10.0
"""Seconds a typed code may take to reach the server (an lmsh run on a loaded machine)."""


def earliest_safe_step() -> int:
    """The oldest step whose code the server still accepts (±1 step skew) when it arrives
    up to ``CODE_IN_FLIGHT`` seconds from now: the previous step, unless the next is near.
    Tests that log in several times spend steps from here instead of waiting for new ones."""
    return int(time.time() + CODE_IN_FLIGHT) // TOTP_STEP - 1


class SshAgent:
    """A real ``ssh-agent -D -a SOCK`` (foreground, so it is stopped by its pid)."""

    def __init__(self) -> None:
        # A short directory: Unix socket paths are limited to ~108 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="lm-agent-"))
        self.socket = self.directory / "agent.sock"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> SshAgent:
        self.process = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(self.socket)], env=clean_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        wait_for(self.socket.exists, timeout, f"ssh-agent socket {self.socket}")
        return self

    def identities(self) -> list[str]:
        """``ssh-add -L``: the public keys and certificates the agent holds (one per line)."""
        result = run(["ssh-add", "-L"], env=clean_env(SSH_AUTH_SOCK=self.socket), check=False)
        if result.returncode == 1 and "no identities" in result.stdout + result.stderr:
            return []
        assert result.returncode == 0, describe(result)
        return result.stdout.splitlines()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(STOP_TIMEOUT)
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass(frozen=True)
class SshCertificate:
    """What ``ssh-keygen -L`` shows of an OpenSSH certificate."""

    kind: str
    """``user`` or ``host``."""
    key_id: str
    signing_ca: str
    """Fingerprint of the signing CA (``SHA256:...``)."""
    valid_from: datetime
    valid_to: datetime
    """Naive local times, as ssh-keygen prints them."""
    principals: tuple[str, ...]
    critical_options: tuple[str, ...]
    extensions: tuple[str, ...]
    """Extension names."""


def inspect_ssh_cert(path: Path) -> SshCertificate:
    """Parse ``ssh-keygen -L -f PATH``."""
    text = run(["ssh-keygen", "-L", "-f", path], env=clean_env()).stdout
    kind = re.search(r"Type: \S+ (user|host) certificate", text)
    valid = re.search(r"Valid: from (\S+) to (\S+)", text)
    key_id = re.search(r'Key ID: "(.*)"', text)
    signer = re.search(r"Signing CA: \S+ (\S+)", text)
    if not (kind and valid and key_id and signer):
        raise AssertionError(f"not an OpenSSH certificate listing:\n{text}")
    sections: dict[str, list[str]] = {}
    current, header_indent = None, 0
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        header = re.match(r"\s+(Principals|Critical Options|Extensions):", line)
        if header:
            current, header_indent = header.group(1), indent
            sections[current] = []
        elif current and line.strip() and indent > header_indent:
            sections[current].append(line.split()[0])
        else:
            current = None
    return SshCertificate(
        kind=kind.group(1), key_id=key_id.group(1), signing_ca=signer.group(1),
        valid_from=datetime.fromisoformat(valid.group(1)),
        valid_to=datetime.fromisoformat(valid.group(2)),
        principals=tuple(sections.get("Principals", [])),
        critical_options=tuple(sections.get("Critical Options", [])),
        extensions=tuple(sections.get("Extensions", [])))


def ssh_fingerprint(public_key: str) -> str:
    """``ssh-keygen -lf -`` of one OpenSSH public key line: its ``SHA256:...`` fingerprint."""
    out = run(["ssh-keygen", "-lf", "-"], env=clean_env(), input=public_key + "\n").stdout
    return out.split()[1]
