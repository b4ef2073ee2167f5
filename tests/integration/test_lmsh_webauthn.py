"""lmsh with a security key against a real ``limen start`` cluster: sign up with a key
instead of the authenticator app, log in with it, ``lmsh mfa ls|add|rm``, and the refusals
(a cloned key, the last second factor, a key file others may read), each audited.

The key is lmsh's software key (``LMSH_WEBAUTHN_DEVICE``, ``limen.client.webauthn_softkey``):
lmsh's fido2 client speaks CTAP2 to it as to a USB key; the proxy and auth are the real ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from integration.cluster import LimenCluster, LimenUser, command, run


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimenCluster]:
    started = LimenCluster(tmp_path_factory.mktemp("webauthn"), "keys").start()
    try:
        yield started
        started.stop()
    finally:
        started.kill()


def lmsh(user: LimenUser, key: Path, *args: str, input: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([command("lmsh"), *args], env={**user.env, "LMSH_WEBAUTHN_DEVICE": str(key)},
               input=input, check=check)


def signup_with_key(cluster: LimenCluster, name: str, key: Path) -> LimenUser:
    user = cluster.user(name)
    link = cluster.add_user(name, ["auditor"])["url"]
    done = lmsh(user, key, "signup", "--link", link, "--mfa", "webauthn", "--key-name", "soft",
                "--password-stdin", "-o", "json", input=user.password + "\n")
    assert json.loads(done.stdout)["user"] == name
    return user


def login(user: LimenUser, key: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lmsh(user, key, "login", "--proxy", user.proxy, "--user", user.name,
                "--password-stdin", "--mfa", "webauthn", input=user.password + "\n",
                check=check)


def events(cluster: LimenCluster, event_type: str, user: str, **fields: Any) -> list[Any]:
    return [e for e in cluster.audit(event_type, user=user)
            if all(e.get(k) == v for k, v in fields.items())]


def test_signup_login_and_manage_keys_with_lmsh(cluster: LimenCluster, tmp_path: Path) -> None:
    key, backup = tmp_path / "key.json", tmp_path / "backup.json"
    user = signup_with_key(cluster, "kay", key)
    assert key.stat().st_mode & 0o777 == 0o600
    login(user, key)
    assert user.status()["user"] == "kay"
    assert events(cluster, "user.login", "kay", success=True, second_factor="webauthn")

    both = Path(f"{key}{os.pathsep}{backup}")  # two keys plugged in: the old confirms
    thief = lmsh(user, backup, "mfa", "add", "--type", "webauthn", "--name", "thief",
                 "--otp", "123456", check=False)  # a certificate and a new key: not enough
    assert thief.returncode != 0
    assert "confirm the change with a second factor" in thief.stderr
    assert events(cluster, "mfa.add", "kay", name="thief", success=False,
                  reason="proof_missing")
    lmsh(user, both, "mfa", "add", "--type", "webauthn", "--name", "backup")
    listed = json.loads(lmsh(user, key, "mfa", "ls", "-o", "json").stdout)["items"]
    assert [(f["name"], f["type"]) for f in listed] == [("soft", "webauthn"),
                                                        ("backup", "webauthn")]
    assert events(cluster, "mfa.add", "kay", name="backup", success=True)

    lmsh(user, both, "mfa", "rm", "soft")
    login(user, backup)  # the backup key logs in; the removed one no longer does
    refused = login(user, key, check=False)
    assert refused.returncode != 0
    assert "one of your registered keys" in refused.stderr  # the key finds none to use

    last = lmsh(user, backup, "mfa", "rm", "backup", check=False)
    assert last.returncode != 0
    assert "last second factor" in last.stderr
    assert events(cluster, "mfa.remove", "kay", name="backup", success=False)
    assert events(cluster, "mfa.remove", "kay", name="soft", success=True)


def test_a_cloned_key_is_refused(cluster: LimenCluster, tmp_path: Path) -> None:
    key, clone = tmp_path / "key.json", tmp_path / "clone.json"
    user = signup_with_key(cluster, "clo", key)
    shutil.copy(key, clone)
    login(user, key)
    refused = login(user, clone, check=False)
    assert refused.returncode != 0
    assert events(cluster, "user.login", "clo", success=False, reason="webauthn_counter")


def test_a_key_file_others_may_read_is_refused(cluster: LimenCluster, tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    user = signup_with_key(cluster, "loose", key)
    key.chmod(0o644)
    refused = login(user, key, check=False)
    assert refused.returncode != 0
    assert "mode 0600" in refused.stderr
