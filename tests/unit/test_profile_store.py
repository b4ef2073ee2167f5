"""The profile file of ``lmsh`` (limen.client.profile): written as JSON, which YAML readers
read too, and profiles written as block YAML by earlier versions still load."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from limen.client.profile import Profile, ProfileStore
from limen.errors import BadParameter

PROFILE = Profile(proxy="proxy.example:3080", user="alice", cluster="main",
                  expires="2030-01-01T00:00:00+00:00", roles=("access",), logins=("alice",),
                  ssh_proxy="proxy.example:3023")


def save(store: ProfileStore, profile: Profile = PROFILE) -> None:
    store.save_login(profile, private_key=b"k", public_key=b"p", ssh_cert=b"c", tls_cert=b"t",
                     tls_cas={"main": b"ca"}, host_ca_lines=["@cert-authority * x"])


def test_a_saved_profile_is_json_and_yaml_and_loads_back(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    save(store)
    path = store.profile_path(PROFILE.proxy)
    text = path.read_text(encoding="utf-8")
    assert json.loads(text) == yaml.safe_load(text)
    assert json.loads(text)["roles"] == ["access"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert store.current() == PROFILE


def test_leaf_clusters_are_saved_in_a_copy(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    save(store)
    updated = store.save_leaf_clusters(PROFILE, ["leaf"], [])
    assert updated.leaf_clusters == ("leaf",)
    assert PROFILE.leaf_clusters == ()
    assert store.load(PROFILE.proxy) == updated


def test_a_block_yaml_profile_of_an_earlier_version_loads(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    save(store)
    plain = {**PROFILE._asdict(), "roles": ["access"], "logins": ["alice"], "leaf_clusters": []}
    store.profile_path(PROFILE.proxy).write_text(yaml.safe_dump(plain), encoding="utf-8")
    assert store.load(PROFILE.proxy) == PROFILE


@pytest.mark.parametrize("text", ["[1, 2]", "{unclosed: [", "- a\n- b\n"])
def test_a_profile_that_is_no_mapping_is_a_clear_error(tmp_path: Path, text: str) -> None:
    store = ProfileStore(tmp_path)
    save(store)
    store.profile_path(PROFILE.proxy).write_text(text, encoding="utf-8")
    with pytest.raises(BadParameter, match="is not a profile"):
        store.load(PROFILE.proxy)


def test_a_leafs_host_ca_lines_are_replaced_by_what_the_root_lists_now(tmp_path: Path) -> None:
    """A leaf's host CA rotation: the root lists the old and new key, then the new one only;
    known_hosts follows for that leaf and keeps every other line."""
    store = ProfileStore(tmp_path)
    save(store)
    own, other = "@cert-authority *.example.com ssh-ed25519 OWN", "@cert-authority *.b KEY"
    store.known_hosts.write_text(f"{own}\n{other}\n")
    old, new = "@cert-authority *.leaf OLD", "@cert-authority *.leaf NEW"
    store.save_leaf_clusters(PROFILE, ["leaf"], [old])
    store.save_leaf_clusters(PROFILE, ["leaf"], [old, new])
    assert store.known_hosts.read_text().splitlines() == [own, other, old, new]
    store.save_leaf_clusters(PROFILE, ["leaf"], [new])
    assert store.known_hosts.read_text().splitlines() == [own, other, new]
