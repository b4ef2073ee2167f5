"""Where ``lmsh login`` logs in when flags are left out (limen.cli.lmsh_login): the current
profile's proxy and user, a given proxy's saved user, or one clear error; and --ca-pin's form."""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.cli.lmsh_login import check_pin_format, login_target
from limen.client.profile import Profile, ProfileStore
from limen.errors import BadParameter


def _store(tmp_path: Path) -> ProfileStore:
    store = ProfileStore(tmp_path / "limen")
    profile = Profile(proxy="p:3080", user="alice", cluster="c",
                      expires="2000-01-01T00:00:00+00:00")
    store.save_login(profile, private_key=b"k", public_key=b"p", ssh_cert=b"s",
                     tls_cert=b"t", tls_cas={}, host_ca_lines=[])
    return store


def test_no_flags_reuse_the_current_profile_even_expired(tmp_path: Path) -> None:
    assert login_target(_store(tmp_path), None, None) == ("p:3080", "alice")


def test_flags_override_the_profile(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert login_target(store, None, "bob") == ("p:3080", "bob")
    assert login_target(store, "p:3080", None) == ("p:3080", "alice")
    assert login_target(store, "q:3080", "carol") == ("q:3080", "carol")


def test_without_a_profile_the_error_says_what_to_pass(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "empty")
    with pytest.raises(BadParameter, match=r"^no saved profile to log in again: run lmsh login "
                                           r"--proxy HOST:PORT --user NAME$"):
        login_target(store, None, None)
    with pytest.raises(BadParameter, match="--proxy q:3080 --user NAME"):
        login_target(_store(tmp_path), "q:3080", None)


@pytest.mark.parametrize("pin", ["sha256:" + "ab" * 31, "md5:" + "ab" * 32, "ab" * 32])
def test_malformed_pins_are_refused(pin: str) -> None:
    with pytest.raises(BadParameter, match="64 hex digits"):
        check_pin_format(pin)
    check_pin_format("sha256:" + "AB" * 32)
