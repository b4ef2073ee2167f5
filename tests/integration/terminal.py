"""A shell on a pseudo-terminal, driven as a person types: one command line at a time, answering
the prompts the command shows, reading the exit status the shell reports.

Used by ``tests/integration/test_readme.py`` to run the README's command block verbatim: the
commands get a real controlling terminal (password prompts read ``/dev/tty``, ``ssh -t``
allocates a PTY), and nothing is typed ahead of the prompt that asks for it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Prompt", "Terminal"]

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")


@dataclass(frozen=True)
class Prompt:
    """A prompt (a regular expression matched against the end of the output so far) and how to
    answer it, given the output of the current command up to the prompt."""

    pattern: re.Pattern[str]
    answer: Callable[[str], str]


class Terminal:
    """``argv`` (a shell) on a new PTY of 120x40, as a session leader with that terminal as its
    controlling terminal; ``owner`` (a uid) gets the terminal device, as login would do."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: str,
                 owner: int | None = None) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: become argv on the new terminal
            try:
                os.chdir(cwd)
                if owner is not None:
                    os.chown(os.ttyname(0), owner, -1)
                os.execvpe(argv[0], list(argv), dict(env))  # noqa: S606
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.transcript = ""
        self._raw = b""

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the shell is gone
            data = b""
        if not data:
            raise EOFError("the shell on the terminal exited")
        self._raw += data
        self.transcript = ANSI.sub(b"", self._raw).decode(errors="replace")
        return True

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def run(self, line: str, marker: str, prompts: Sequence[Prompt],
            timeout: float) -> tuple[int, str]:
        """Type ``line`` (in a ``{ ...; }`` group, so a trailing ``# comment`` stays a comment),
        answer ``prompts`` as they appear, and return (exit status, output of the line)."""
        start = len(self.transcript)
        self.send(f"{{ {line}\n}}; echo {marker}=$?\n")
        done = re.compile(rf"^{re.escape(marker)}=(\d+)$", re.MULTILINE)
        answered = start
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._read(min(0.5, max(0.0, deadline - time.monotonic()))):
                continue
            output = self.transcript[start:]
            found = done.search(output)
            if found:
                return int(found.group(1)), output[: found.start()]
            pending = self.transcript[answered:]
            for prompt in prompts:
                if prompt.pattern.search(pending):
                    self.send(prompt.answer(output) + "\n")
                    answered = len(self.transcript)
                    break
        raise TimeoutError(f"{line!r} did not finish within {timeout:g}s; "
                           f"output:\n{self.transcript[start:]}")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGHUP)
        os.close(self.fd)
        os.waitpid(self.pid, 0)
