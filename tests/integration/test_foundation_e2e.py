"""End-to-end acceptance of the foundation: ``lmctl apply/get/rm`` over the real commands, both
offline (no cluster running: ``lmctl --data-dir D`` opens D's store) and against a running
``limen start`` (``lmctl --data-dir D`` goes through the auth API with D's admin identity);
all-or-nothing validation with the error format of docs/architecture.md; exit codes; clean
SIGTERM; random ports for clusters side by side.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .cluster import ClusterFactory, LimenCluster, describe, tree_modes

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"
ORIGIN_LABEL = "limen.dev/origin"
DEFAULT_PORTS = {3080, 3023, 3024, 3025, 3022, 5433, 3036, 3026, 3027}


def example_documents(directory: Path = EXAMPLES) -> list[dict[str, Any]]:
    """Every YAML document under ``directory`` (how a reader of the repository sees them)."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def object_names(docs: list[dict[str, Any]]) -> set[str]:
    return {f"{d['kind'].lower()}/{d['metadata']['name']}" for d in docs}


def actions(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """``lmctl apply`` text output (``kind/name action`` per line) as a mapping."""
    assert result.returncode == 0, describe(result)
    pairs = [line.split() for line in result.stdout.splitlines()]
    assert all(len(p) == 2 for p in pairs), result.stdout
    found = dict((name, action) for name, action in pairs)
    assert len(found) == len(pairs), f"an object is reported twice:\n{result.stdout}"
    return found


@dataclass(frozen=True)
class Applied:
    """A data directory into which examples/gitops was applied once, and that first output."""

    site: LimenCluster
    mode: str
    """``offline`` (nothing runs: bootstrap path) or ``running`` (through the auth API)."""
    first: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    """A running cluster shared by this module (each test leaves its objects as it found them,
    or uses names of its own)."""
    return module_clusters("foundation")


@pytest.fixture(scope="module")
def site_applied(site: LimenCluster) -> Applied:
    return Applied(site, "running", site.lmctl("apply", "-f", EXAMPLES))


@pytest.fixture(scope="module", params=["offline", "running"])
def applied(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Applied:
    if request.param == "running":
        running: Applied = request.getfixturevalue("site_applied")
        return running
    target = LimenCluster(tmp_path_factory.mktemp("offline"), "offline")  # never started
    return Applied(target, request.param, target.lmctl("apply", "-f", EXAMPLES))


PRESETS = {"access", "editor", "auditor"}
"""The preset roles a started cluster creates (limen.rbac.presets); the demo's auditor takes
the auditor preset over."""


def test_apply_prints_created_for_each_object(applied: Applied) -> None:
    expected = dict.fromkeys(object_names(example_documents()), "created")
    if applied.mode == "running":
        expected["role/auditor"] = "updated"  # the preset of that name, taken over
    assert actions(applied.first) == expected
    assert applied.site.running is (applied.mode == "running")


def test_the_data_directory_is_private(applied: Applied) -> None:
    modes = tree_modes(applied.site.data_dir)
    # listeners.json holds only loopback addresses, for scripts of any user.
    modes.pop("listeners.json", None)
    assert "log/events/" in modes
    assert {name: mode for name, mode in modes.items() if name.endswith("/")} == \
        dict.fromkeys((n for n in modes if n.endswith("/")), 0o700)
    assert {name: mode for name, mode in modes.items() if not name.endswith("/")} == \
        dict.fromkeys((n for n in modes if not n.endswith("/")), 0o600)


def test_applying_the_same_directory_again_changes_nothing(applied: Applied) -> None:
    again = applied.site.lmctl("apply", "-f", EXAMPLES)
    assert actions(again) == dict.fromkeys(object_names(example_documents()), "unchanged")


def test_get_roles_yaml_round_trips_every_field(applied: Applied) -> None:
    output = applied.site.lmctl("get", "roles", "-o", "yaml").stdout
    stored = {d["metadata"]["name"]: d for d in yaml.safe_load_all(output) if d}
    declared = {d["metadata"]["name"]: d for d in example_documents(EXAMPLES / "roles")}
    presets = PRESETS - set(declared) if applied.mode == "running" else set()
    assert set(stored) == set(declared) | presets
    assert all(stored[name]["metadata"]["labels"][ORIGIN_LABEL] == "preset"
               for name in presets)
    for name, doc in declared.items():
        got = stored[name]
        assert got["apiVersion"] == doc["apiVersion"]
        assert got["kind"] == "Role"
        assert got["spec"] == doc["spec"], name
        labels = dict(got["metadata"].get("labels") or {})
        assert labels.pop(ORIGIN_LABEL) == "api", name
        assert labels == (doc["metadata"].get("labels") or {}), name
        assert (got["metadata"].get("annotations") or {}) == \
            (doc["metadata"].get("annotations") or {}), name

    back = applied.site.lmctl("apply", "-f", "-", input=output)
    # applying a preset's document takes the preset over (origin api from then on)
    assert actions(back) == {f"role/{name}": "unchanged" for name in declared} | {
        f"role/{name}": "updated" for name in presets}


def test_get_of_a_kind_is_a_list_even_with_one_object(tmp_path: Path) -> None:
    store = LimenCluster(tmp_path, "single")  # never started: the offline path
    store.lmctl("apply", "-f", EXAMPLES / "roles" / "dev.yaml")
    listed = store.lmctl_json("get", "roles")
    assert listed["kind"] == "List"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["dev"]


def test_running_lmctl_goes_through_the_auth_api(site_applied: Applied,
                                                 tmp_path: Path) -> None:
    site = site_applied.site
    assert site.status()["listeners"] == site.listeners  # only the remote admin knows them

    created = [e for e in site.audit("role.created", "role.updated")
               if e["name"] in {"dev", "ops", "auditor"} and e["user"] == "admin"]
    assert {e["name"]: e["event"] for e in created} == {
        "dev": "role.created", "ops": "role.created", "auditor": "role.updated"}
    assert all(e["origin"] == "api" and e["success"] for e in created)
    presets = [e for e in site.audit("role.created") if e["user"] == "preset"]
    assert {e["name"] for e in presets} == PRESETS

    # A data directory with nothing but listeners.json and the admin identity: only the auth
    # API can answer from it (an offline lmctl would open an empty store there).
    thin = tmp_path / "thin"
    thin.mkdir(mode=0o700)
    shutil.copy(site.listeners_path, thin / "listeners.json")
    shutil.copytree(site.data_dir / "admin", thin / "admin")
    remote = LimenCluster(tmp_path, "thin", data_dir=thin)
    listed = remote.lmctl_json("get", "roles")
    assert sorted(r["metadata"]["name"] for r in listed["items"]) == [
        "access", "auditor", "dev", "editor", "ops"]
    assert not (thin / "backend.sqlite").exists()


BAD_ROLES = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata:
  name: fine-but-rejected
spec:
  allow:
    logins: [fine]
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata:
  name: bad
spec:
  allow:
    node_labels:
      env: '^(prod'
"""


def test_one_invalid_document_rejects_the_whole_directory(site_applied: Applied,
                                                          tmp_path: Path) -> None:
    site = site_applied.site
    repo = tmp_path / "gitops"
    shutil.copytree(EXAMPLES, repo)
    (repo / "roles" / "bad.yaml").write_text(BAD_ROLES, encoding="utf-8")
    line = BAD_ROLES.splitlines().index("      env: '^(prod'") + 1
    (repo / "roles" / "dev.yaml").write_text(
        (EXAMPLES / "roles" / "dev.yaml").read_text().replace("max_session_ttl: 8h",
                                                              "max_session_ttl: 2h"))
    before = site.lmctl("get", "roles", "-o", "json").stdout

    result = site.lmctl("apply", "-f", repo, check=False)

    assert result.returncode == 1, describe(result)
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: roles/bad.yaml[1] spec.allow.node_labels.env: '^(prod' is not a valid "
        f"regular expression (line {line})"]
    assert site.lmctl("get", "roles", "-o", "json").stdout == before
    missing = site.lmctl("get", "role/fine-but-rejected", check=False)
    assert missing.returncode == 1, describe(missing)


def _private_key_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()


BROKEN_YAML = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata:
  name: broken
spec:
  allow: {logins: [a]
  deny: {}
"""
UNKNOWN_KIND = """\
apiVersion: limen.dev/v1alpha1
kind: Gadget
metadata:
  name: widget
spec: {size: 1}
"""


@pytest.mark.parametrize(("file_name", "expected"), [
    ("broken.yaml", r"error: broken\.yaml\[0\]: invalid YAML: .+ \(line 7\)"),
    ("gadget.yaml", r"error: gadget\.yaml\[0\] kind: unknown kind 'Gadget' .+ \(line 2\)"),
    ("leak.yaml", r"error: leak\.yaml\[0\] spec\.description: looks like a secret.+ \(line \d+\)"),
])
def test_rejects_malformed_unknown_and_secret_documents(site: LimenCluster, tmp_path: Path,
                                                        file_name: str, expected: str) -> None:
    leak = {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": "leaky-db", "labels": {"env": "dev"}},
            "spec": {"kind": "db", "protocol": "postgres", "address": "127.0.0.1:5432",
                     "description": _private_key_pem()}}
    texts = {"broken.yaml": BROKEN_YAML, "gadget.yaml": UNKNOWN_KIND,
             "leak.yaml": yaml.safe_dump(leak, sort_keys=False)}
    repo = tmp_path / "docs"
    repo.mkdir()
    (repo / file_name).write_text(texts[file_name], encoding="utf-8")
    shutil.copy(EXAMPLES / "roles" / "ops.yaml", repo / "ops.yaml")

    result = site.lmctl("apply", "-f", repo, check=False)

    assert result.returncode == 1, describe(result)
    assert re.fullmatch(expected, result.stderr.rstrip("\n")), result.stderr
    assert "PRIVATE KEY" not in result.stderr


def test_rm_removes_an_api_owned_role(site: LimenCluster, tmp_path: Path) -> None:
    role = {"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
            "metadata": {"name": "scratch"}, "spec": {"allow": {"logins": ["nobody"]}}}
    (tmp_path / "scratch.yaml").write_text(yaml.safe_dump(role))
    assert actions(site.lmctl("apply", "-f", tmp_path / "scratch.yaml")) == {
        "role/scratch": "created"}
    assert site.lmctl_json("get", "role/scratch")["metadata"]["labels"][ORIGIN_LABEL] == "api"

    removed = site.lmctl("rm", "role/scratch")

    assert removed.stdout.strip() == "role/scratch deleted"
    gone = site.lmctl("get", "role/scratch", check=False)
    assert gone.returncode == 1, describe(gone)
    assert "not found" in gone.stderr
    deleted = [e for e in site.audit("role.deleted") if e["name"] == "scratch"]
    assert [(e["user"], e["origin"], e["success"]) for e in deleted] == [("admin", "api", True)]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["get"], 2, "Missing argument"),
    (["apply"], 2, "Missing option"),
    (["--no-such-option", "status"], 2, "No such option"),
    (["rm", "role/does-not-exist"], 1, "error: "),
])
def test_exit_codes(site: LimenCluster, args: list[str], code: int, message: str) -> None:
    result = site.lmctl(*args, check=False)
    assert result.returncode == code, describe(result)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_exit_code_3_when_the_auth_server_cannot_be_reached(site: LimenCluster) -> None:
    result = site.lmctl("--auth", "127.0.0.1:1", "-i", site.data_dir / "admin", "status",
                        check=False)
    assert result.returncode == 3, describe(result)
    assert result.stderr.startswith("error: cannot reach")
    assert "127.0.0.1:1" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_sigterm_stops_cleanly_and_removes_listeners(cluster: LimenCluster) -> None:
    assert set(cluster.listeners) >= {"auth", "web"}
    assert cluster.running

    assert cluster.stop() == 0

    assert cluster.process is not None
    assert cluster.process.poll() == 0
    assert not cluster.listeners_path.exists()
    # Stopped means stopped: the data directory is now served offline again.
    assert cluster.status()["listeners"] == {}


def test_offline_bootstrap_leaves_the_cluster_name_to_the_first_start(tmp_path: Path) -> None:
    """Bootstrap a data directory offline, then start it: the name given at the first
    ``limen start`` is the cluster's name (an offline lmctl that recorded the host name first
    would bake a name nobody asked for into every certificate)."""
    site = LimenCluster(tmp_path, "prod")
    site.lmctl("apply", "-f", EXAMPLES / "roles")  # offline: nothing runs yet
    site.start()
    try:
        assert site.status()["cluster"] == "prod"
    finally:
        site.stop()


def test_random_ports_let_two_clusters_run_side_by_side(clusters: ClusterFactory) -> None:
    alpha, beta = clusters("alpha"), clusters("beta")

    ports = [int(a.rsplit(":", 1)[1]) for c in (alpha, beta) for a in c.listeners.values()]
    assert len(ports) == len(set(ports)), (alpha.listeners, beta.listeners)
    assert not set(ports) & DEFAULT_PORTS
    for site in (alpha, beta):
        for address in site.listeners.values():
            host, port = address.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=5):
                pass
    a, b = alpha.status(), beta.status()
    assert (a["cluster"], b["cluster"]) == ("alpha", "beta")
    assert a["ca_fingerprints"]["tls"] != b["ca_fingerprints"]["tls"]
    assert json.loads(alpha.listeners_path.read_text()) == a["listeners"]
