"""Accounts whose shell is nologin/false (or no executable) get no session on the node."""

from __future__ import annotations

from pathlib import Path

from limen.agents.node.unixuser import UnixUser, login_shell_refusal


def _user(shell: str) -> UnixUser:
    return UnixUser("svc", 999, 999, "/nonexistent", shell)


def test_nologin_and_false_are_refused() -> None:
    for shell in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false"):
        reason = login_shell_refusal(_user(shell))
        assert reason is not None, shell
        assert shell in reason, reason
        assert "'svc'" in reason, reason


def test_a_missing_or_non_executable_shell_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "not-exec"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    for shell in (str(tmp_path / "missing"), str(plain), str(tmp_path)):
        reason = login_shell_refusal(_user(shell))
        assert reason is not None, shell
        assert "not an executable file" in reason, reason


def test_a_real_shell_is_fine() -> None:
    assert login_shell_refusal(_user("/bin/sh")) is None
