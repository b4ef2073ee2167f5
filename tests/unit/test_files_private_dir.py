"""``limen.files.private_dir`` on the directories a daemon meets: its own (made 0700, even
after the kubelet gave it to the pod's group, 2770) and one it does not own, such as a
Kubernetes volume's root (root with group fsGroup: left as it is, used only when other users
have no access and this process can write; otherwise a clear BadParameter, never a crash).

"Not owned" is had without a second account: ``os.geteuid`` is made to answer another uid."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from limen.errors import BadParameter
from limen.files import private_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def someone_else(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    """This process now runs as a uid that owns nothing under tmp_path (and is not root)."""
    uid = tmp_path.stat().st_uid + 4242
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    return uid


def test_missing_directories_are_created_private(tmp_path: Path) -> None:
    target = tmp_path / "home" / "data"
    assert private_dir(target) == target
    assert (mode(tmp_path / "home"), mode(target)) == (0o700, 0o700)


@pytest.mark.parametrize("before", [0o755, 0o2770, 0o777])
def test_a_directory_of_its_own_is_made_0700(tmp_path: Path, before: int) -> None:
    target = tmp_path / "data"
    target.mkdir()
    target.chmod(before)  # 2770: what the kubelet's fsGroup ownership makes of it
    private_dir(target)
    assert mode(target) == 0o700


@pytest.mark.parametrize("volume_mode", [0o2775, 0o2777, 0o755, 0o2771])
def test_a_volume_root_others_can_use_is_refused_and_left_alone(
        tmp_path: Path, someone_else: int, volume_mode: int) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    volume.chmod(volume_mode)
    with pytest.raises(BadParameter) as refused:
        private_dir(volume)
    message = str(refused.value)
    assert f"belongs to uid {volume.stat().st_uid}, not to this process (uid {someone_else})" \
        in message
    assert f"(mode {volume_mode:04o})" in message
    assert str(volume / "data") in message  # what to do instead
    assert mode(volume) == volume_mode


def test_a_group_only_volume_root_is_used_as_it_is(tmp_path: Path, someone_else: int) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    volume.chmod(0o2770)
    assert private_dir(volume) == volume
    assert mode(volume) == 0o2770


def test_a_volume_root_it_cannot_write_is_refused(tmp_path: Path, someone_else: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    volume.chmod(0o2750)
    monkeypatch.setattr(os, "access", lambda *_args, **_kw: False)
    with pytest.raises(BadParameter, match=r"cannot write to it \(mode 2750"):
        private_dir(volume)


def test_a_file_is_not_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(BadParameter, match="is not a directory"):
        private_dir(path)
