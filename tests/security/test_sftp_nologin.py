"""Attack: file access through a login that is not meant to log in, and SFTP operations that
slip past the audit log, against a real ``limen start`` (node agent behind the proxy) with the
stock OpenSSH ``sftp``, ``scp`` and ``ssh`` configured by ``lmsh config``.

* A Unix account whose shell is ``/usr/sbin/nologin`` (a service account) is in the user's
  logins. sshd runs every session through the login shell, so such an account gets nothing
  there; the node agent must refuse the same: sftp, scp, a command and a shell, each with the
  reason on stderr and an ``access.denied`` event (rule ``login shell``).
* With a real account, ``sftp``'s ``rename`` (``posix-rename@openssh.com``) and ``ln``
  (``hardlink@openssh.com``) are audited like the standard rename and symlink.

Needs root (``useradd``), as in CI.
"""

from __future__ import annotations

import os
import pwd
import secrets
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import ClusterFactory, LimenCluster, LimenUser, describe, run, wait_for

HOST = socket.gethostname().split(".")[0].lower()
NOLOGIN = "/usr/sbin/nologin"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create Unix users")


def _useradd(shell: str) -> Iterator[str]:
    name = f"lm-sec-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-m", "-s", shell, name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "-r", "-f", name], check=False, capture_output=True)


@pytest.fixture(scope="module")
def service_account() -> Iterator[str]:
    """A Unix account with the nologin shell (and a home directory holding a file)."""
    for name in _useradd(NOLOGIN):
        home = Path(pwd.getpwnam(name).pw_dir)
        (home / "secret.txt").write_text("service data\n")
        yield name


@pytest.fixture(scope="module")
def person_account() -> Iterator[str]:
    yield from _useradd("/bin/bash")


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    return module_clusters("nologin")


@pytest.fixture(scope="module")
def mallory(site: LimenCluster, service_account: str, person_account: str) -> LimenUser:
    user = site.signed_up_user("mallory", roles=["access"],
                               logins=[service_account, person_account])
    user.login()
    wait_for(lambda: HOST in user.lmsh("ls").stdout, 20.0, "the node in lmsh ls")
    return user


@pytest.fixture(scope="module")
def ssh_config(mallory: LimenUser) -> Path:
    path = mallory.home / "ssh_config"
    path.write_text(mallory.lmsh("config").stdout, encoding="utf-8")
    return path


def _target(site: LimenCluster, login: str) -> str:
    return f"{login}@{HOST}.{site.name}"


def _denied(site: LimenCluster, login: str, action: str) -> dict[str, Any]:
    events = wait_for(lambda: [e for e in site.audit("access.denied")
                               if e.get("login") == login and e.get("action") == action],
                      15.0, f"access.denied ({action}) for {login}")
    event: dict[str, Any] = events[-1]
    return event


def test_sftp_as_a_nologin_account_is_refused(site: LimenCluster, mallory: LimenUser,
                                              ssh_config: Path, service_account: str,
                                              tmp_path: Path) -> None:
    batch = tmp_path / "batch"
    batch.write_text(f"get secret.txt {tmp_path / 'stolen.txt'}\n")
    result = run(["sftp", "-F", ssh_config, "-b", batch, _target(site, service_account)],
                 env=mallory.env, check=False)
    assert result.returncode != 0, describe(result)
    assert not (tmp_path / "stolen.txt").exists()
    assert f"has no login shell ({NOLOGIN})" in result.stderr, describe(result)
    event = _denied(site, service_account, "sftp")
    assert event["success"] is False
    assert event["rule"] == "login shell"
    assert NOLOGIN in event["reason"]
    assert event["user"] == "mallory"


def test_scp_command_and_shell_as_a_nologin_account_are_refused(
        site: LimenCluster, mallory: LimenUser, ssh_config: Path, service_account: str,
        tmp_path: Path) -> None:
    target = _target(site, service_account)
    attempts = {
        "scp": ["scp", "-F", ssh_config, f"{target}:secret.txt", tmp_path / "scp.txt"],
        "scp -O": ["scp", "-O", "-F", ssh_config, f"{target}:secret.txt", tmp_path / "o.txt"],
        "exec": ["ssh", "-F", ssh_config, target, "cat secret.txt"],
        "shell": ["ssh", "-F", ssh_config, "-T", target],
    }
    for what, argv in attempts.items():
        result = run(argv, env=mallory.env, input="cat secret.txt\n", check=False)
        assert result.returncode != 0, (what, describe(result))
        assert "service data" not in result.stdout, (what, describe(result))
        assert "has no login shell" in result.stderr, (what, describe(result))
    assert not list(tmp_path.glob("*.txt"))
    for action in ("sftp", "scp", "exec", "shell"):
        assert _denied(site, service_account, action)["rule"] == "login shell"


def test_a_real_account_still_works(site: LimenCluster, mallory: LimenUser, ssh_config: Path,
                                    person_account: str) -> None:
    result = run(["ssh", "-F", ssh_config, _target(site, person_account), "id -un"],
                 env=mallory.env)
    assert result.stdout.strip() == person_account


def test_posix_rename_and_hardlink_are_audited(site: LimenCluster, mallory: LimenUser,
                                               ssh_config: Path, person_account: str,
                                               tmp_path: Path) -> None:
    home = Path(pwd.getpwnam(person_account).pw_dir)
    (tmp_path / "a.txt").write_text("alpha\n")
    batch = tmp_path / "batch"
    batch.write_text(f"put {tmp_path / 'a.txt'} a.txt\n"
                     "rename a.txt b.txt\n"
                     "ln b.txt c.txt\n")
    result = run(["sftp", "-F", ssh_config, "-b", batch, _target(site, person_account)],
                 env=mallory.env, check=False)
    assert result.returncode == 0, describe(result)
    assert (home / "c.txt").read_text() == "alpha\n"
    assert (home / "b.txt").stat().st_nlink == 2

    def sftp_ops() -> list[dict[str, Any]]:
        return [e for e in site.audit("sftp") if e.get("login") == person_account]

    for action, path, target in (("posix-rename", "a.txt", "b.txt"),
                                 ("hardlink", "b.txt", "c.txt")):
        found = wait_for(lambda a=action: [e for e in sftp_ops() if e.get("action") == a],
                         15.0, f"an sftp {action} event")
        assert found[-1]["path"].endswith(path), found[-1]
        assert found[-1]["target"].endswith(target), found[-1]
        assert found[-1]["user"] == "mallory"
