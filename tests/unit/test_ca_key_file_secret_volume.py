"""``backend.ca_key_file`` as a Kubernetes Secret volume gives it: with the pod's ``fsGroup``
the kubelet makes the file root's, with the pod's group, mode 0440 (``defaultMode: 0400`` plus
the group's read bit), which the process can neither change nor avoid. ``read_ca_key``
accepts exactly that shape: another user's file, readable by the process's own gid, nothing
more. Everything looser, or a file the process owns (it could ``chmod 600`` it), is still
refused. The process's uid is faked (a file of "another user" needs no root to make); the
real kubelet layout runs in tests/integration/test_operator_pods_ha.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from limen.auth.ca_key_file import read_ca_key
from limen.errors import BadParameter

KEY = bytes(range(32))


@pytest.fixture
def not_the_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process runs as another uid than the files it makes (as auth, uid 10001, with
    the kubelet's root-owned Secret files); its gid stays the files' group. (``tmp_path``
    first: pytest checks the owner of its temporary root.)"""
    real = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real + 10001)


def key_file(path: Path, mode: int) -> Path:
    path.write_text(KEY.hex() + "\n")
    path.chmod(mode)
    return path


@pytest.mark.usefixtures("not_the_owner")
def test_a_secret_volume_file_read_through_the_own_group_is_accepted(tmp_path: Path) -> None:
    path = key_file(tmp_path / "key", 0o440)
    assert path.stat().st_gid == os.getgid()
    assert read_ca_key(path) == KEY
    assert read_ca_key(key_file(tmp_path / "owner-rw", 0o640)) == KEY  # the owner's bits: root's


@pytest.mark.usefixtures("not_the_owner")
@pytest.mark.parametrize("mode", [0o460, 0o444, 0o441, 0o442, 0o470], ids=oct)
def test_more_than_group_read_is_still_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path / "key", mode)
    with pytest.raises(BadParameter, match=f"open to its group or others \\(mode {mode:04o}\\)"):
        read_ca_key(path)


@pytest.mark.usefixtures("not_the_owner")
def test_another_group_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = key_file(tmp_path / "key", 0o440)
    real_gid = os.getgid()
    monkeypatch.setattr(os, "getgid", lambda: real_gid + 1)  # the file's group is not ours
    with pytest.raises(BadParameter, match="open to its group or others \\(mode 0440\\)"):
        read_ca_key(path)


def test_a_file_of_ones_own_must_be_owner_only(tmp_path: Path) -> None:
    """Its owner could chmod it: group read is refused as before."""
    path = key_file(tmp_path / "key", 0o440)
    with pytest.raises(BadParameter, match=r"open to its group or others.*chmod 600"):
        read_ca_key(path)
    path.chmod(0o400)
    assert read_ca_key(path) == KEY
