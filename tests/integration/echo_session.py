"""A long-running ``lmsh ssh`` session that echoes each line it is sent, prefixed: what the CA
rotation tests (``test_ca_rotation.py``, ``test_ca_rotation_leaf.py``) keep open across every
phase to show that an open session survives.
"""

from __future__ import annotations

import subprocess

from .cluster import LimenUser, command

__all__ = ["EchoSession"]


class EchoSession:
    """``lmsh ssh *target`` running a loop that answers each line with ``got-<line>``."""

    def __init__(self, user: LimenUser, *target: str) -> None:
        self.process = subprocess.Popen(
            [command("lmsh"), "ssh", *target, "while read line; do echo \"got-$line\"; done"],
            env=user.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)

    def echo(self, word: str) -> None:
        """Send ``word``; its echo must come back on the same session."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(word + "\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == f"got-{word}"

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()
