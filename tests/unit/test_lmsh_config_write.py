"""``lmsh config --write`` (limen.client.sshconfig.merge_block / write_ssh_config): the
Limen block is inserted once per proxy, replaced in place when written again, the user's own
configuration is kept, and files are created private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from limen.client.sshconfig import block_markers, merge_block, write_ssh_config
from limen.errors import BadParameter

PROXY = "proxy.example:3080"
USERS_OWN = "Host *\n    ServerAliveInterval 30\n"


def test_the_block_is_appended_after_the_users_own_lines() -> None:
    merged = merge_block(USERS_OWN, PROXY, "Host *.c\n    Port 3022\n")
    begin, end = block_markers(PROXY)
    assert merged == f"{USERS_OWN}\n{begin}\nHost *.c\n    Port 3022\n{end}\n"


def test_writing_again_replaces_the_block_in_place() -> None:
    once = merge_block(USERS_OWN, PROXY, "Host *.old\n")
    twice = merge_block(once + "Host later\n    User me\n", PROXY, "Host *.new\n")
    assert "Host *.old" not in twice
    assert twice.count(block_markers(PROXY)[0]) == 1
    assert twice.startswith(USERS_OWN)
    assert twice.endswith(f"Host *.new\n{block_markers(PROXY)[1]}\nHost later\n    User me\n")


def test_two_proxies_get_two_blocks() -> None:
    both = merge_block(merge_block("", PROXY, "Host *.a\n"), "other:3080", "Host *.b\n")
    assert both.count("# BEGIN Limen ") == 2
    assert merge_block(both, PROXY, "Host *.a\n") == both


def test_a_damaged_block_is_refused() -> None:
    damaged = block_markers(PROXY)[0] + "\nHost *.a\n"
    with pytest.raises(BadParameter, match="damaged"):
        merge_block(damaged, PROXY, "Host *.a\n")


def test_missing_directory_and_file_are_created_private(tmp_path: Path) -> None:
    config = tmp_path / "home" / ".ssh" / "config"
    (tmp_path / "home").mkdir()
    write_ssh_config(config, PROXY, "Host *.a\n")
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    first = config.read_text()
    write_ssh_config(config, PROXY, "Host *.a\n")
    assert config.read_text() == first


def test_an_existing_files_mode_and_a_symlink_are_kept(tmp_path: Path) -> None:
    real = tmp_path / "dotfiles" / "ssh_config"
    real.parent.mkdir()
    real.write_text(USERS_OWN)
    real.chmod(0o640)
    link = tmp_path / ".ssh" / "config"
    link.parent.mkdir()
    link.symlink_to(real)
    assert write_ssh_config(link, PROXY, "Host *.a\n") == real
    assert link.is_symlink()
    assert stat.S_IMODE(real.stat().st_mode) == 0o640
    assert real.read_text().startswith(USERS_OWN)
