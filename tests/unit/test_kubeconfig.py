"""The kubeconfig ``lmsh kube login`` writes (``limen.client.kubeconfig``): golden file of a
merge into an existing kubeconfig (its other entries kept, the new context current, no secret
inside: an exec plugin, ``limen.client.kube_credentials_main`` run by the interpreter with
``-I -S``), a second login replacing its entry, logout removing exactly its
entries, ``$KUBECONFIG`` (first of a list) respected, mode 0600.
Regenerate the golden file: LIMEN_UPDATE_GOLDEN=1 pytest this file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from limen.client.kubeconfig import KubeEntry, kubeconfig_path, merge_entry, remove_entries

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "kubeconfig"
CA = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
ENTRY = KubeEntry(limen_cluster="main", name="prod", server="https://proxy.example:3026",
                  ca_pem=CA, proxy="proxy.example:3080", command="/usr/bin/python3",
                  command_args=("-I", "-S", "/usr/lib/python3/dist-packages/limen/client/"
                                "kube_credentials_main.py"),
                  limen_home="/home/alice/.limen-work")
EXISTING = {"apiVersion": "v1", "kind": "Config", "current-context": "kind-local",
            "clusters": [{"name": "kind-local", "cluster": {"server": "https://127.0.0.1:6443"}}],
            "users": [{"name": "kind-local", "user": {"token": "x"}}],
            "contexts": [{"name": "kind-local",
                          "context": {"cluster": "kind-local", "user": "kind-local"}}]}


def test_merge_matches_the_golden_file(tmp_path: Path) -> None:
    path = tmp_path / ".kube" / "config"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(EXISTING, sort_keys=False))
    merge_entry(path, ENTRY)
    merge_entry(path, ENTRY)  # logging in again replaces, never duplicates
    text = path.read_text()
    if os.environ.get("LIMEN_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(text)
    assert doc["current-context"] == "main-prod"
    assert "token" not in str(doc["users"][1])


def test_logout_removes_exactly_its_entries(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(EXISTING, sort_keys=False))
    merge_entry(path, ENTRY)
    assert remove_entries(path, ["main-prod"]) == ["main-prod"]
    doc = yaml.safe_load(path.read_text())
    assert [c["name"] for c in doc["contexts"]] == ["kind-local"]
    assert [u["name"] for u in doc["users"]] == ["kind-local"]
    assert doc["current-context"] == ""
    assert remove_entries(tmp_path / "missing", ["main-prod"]) == []


def test_the_kubeconfig_path() -> None:
    assert kubeconfig_path({"KUBECONFIG": f"/a/one{os.pathsep}/b/two", "HOME": "/h"}) == \
        Path("/a/one")
    assert kubeconfig_path({"HOME": "/home/alice"}) == Path("/home/alice/.kube/config")
