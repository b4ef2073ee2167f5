"""Trusted clusters end to end with real ``limen start`` processes: a root, a leaf and a second
leaf. On the root ``lmctl tokens add --type trusted_cluster``; on the leaf ``lmctl apply`` of a
TrustedCluster whose token is in a 0600 file. Checked with ``lmctl get``: the leaf trusts the
root's CAs and reports Ready, the root records the RemoteCluster, online once the leaf proxy's
tunnel is up; the token cannot admit another
leaf; disabling, re-enabling and deleting the TrustedCluster disable, restore and remove the
root's CAs; a wrong CA pin is reported as Stalled. The token files are in the leaf's secrets
directory (DATA_DIR/secrets), named by the reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .cluster import ClusterFactory, LimenCluster, wait_for

ROLE_MAP = [{"remote": "ops", "local": ["visitor"]},
            {"remote": "^admin-(.*)$", "local": ["ops-$1"]}]


def _get(cluster: LimenCluster, target: str) -> dict[str, Any] | None:
    result = cluster.lmctl("get", target, "-o", "json", check=False)
    if result.returncode != 0:
        assert "not found" in result.stderr, result.stderr
        return None
    data = json.loads(result.stdout)
    if isinstance(data, list):
        return data[0] if data else None
    if isinstance(data, dict) and "items" in data:
        return data["items"][0] if data["items"] else None
    return dict(data)


def _condition(cluster: LimenCluster, name: str, kind: str) -> dict[str, Any]:
    found = _get(cluster, f"trustedcluster/{name}") or {}
    for item in found.get("status", {}).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


def _apply_trusted_cluster(leaf: LimenCluster, name: str, root: LimenCluster, token: str,
                           ca_pin: str, *, token_name: str = "", **extra: Any) -> None:
    token_file = leaf.data_dir / "secrets" / f"{token_name or name}.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    document = {"apiVersion": "limen.dev/v1alpha1", "kind": "TrustedCluster",
                "metadata": {"name": name},
                "spec": {"proxy_address": root.web, "token_secret_ref": {"file": token_file.name},
                         "ca_pin": ca_pin, "role_map": ROLE_MAP, **extra}}
    path = leaf.root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    leaf.lmctl("apply", "-f", path)


def _token(root: LimenCluster) -> dict[str, str]:
    issued: dict[str, str] = root.lmctl_json("tokens", "add", "--type", "trusted_cluster",
                                             "--ttl", "1h")
    return issued


def _ca_state(leaf: LimenCluster, name: str) -> str:
    found = _get(leaf, f"certauthorities/{name}")
    if found is None:
        return "absent"
    return "disabled" if found["spec"].get("disabled") else "active"


def test_trusted_cluster_life_cycle(clusters: ClusterFactory, tmp_path: Path) -> None:
    root, leaf, leaf2 = clusters("root"), clusters("leaf"), clusters("leaf2")
    issued = _token(root)
    _apply_trusted_cluster(leaf, "org-a", root, issued["token"], issued["ca_pin"])

    ready = wait_for(lambda: _condition(leaf, "org-a", "Ready").get("status") == "True" and
                     _condition(leaf, "org-a", "Ready"), 20, "the TrustedCluster Ready")
    assert ready["reason"] == "Trusted"
    user_ca = _get(leaf, "certauthorities/user.root")
    assert user_ca is not None
    assert user_ca["metadata"]["labels"]["limen.dev/trusted-cluster"] == "org-a"
    assert user_ca["spec"]["cluster"] == "root"
    assert _ca_state(leaf, "host.root") == "active"
    tc = _get(leaf, "trustedcluster/org-a")
    assert tc is not None
    assert tc["status"]["rootCluster"] == "root"
    remote = wait_for(lambda: (_get(root, "remoteclusters/leaf") or {}).get(
        "spec", {}).get("connection") == "online" and _get(root, "remoteclusters/leaf"), 20,
        "the leaf proxy's tunnel to the root (RemoteCluster online)")
    assert remote["spec"]["last_heartbeat"]
    assert _ca_state(root, "user.leaf") == "active"  # the leaf's CAs, kept by the root

    # the same token cannot admit a second leaf
    _apply_trusted_cluster(leaf2, "org-a", root, issued["token"], issued["ca_pin"])
    refused = wait_for(lambda: _condition(leaf2, "org-a", "Stalled").get("status") == "True"
                       and _condition(leaf2, "org-a", "Stalled"), 20, "the refusal")
    assert refused["reason"] == "Refused"
    assert "join token" in refused["message"]
    assert _get(root, "remoteclusters/leaf2") is None
    assert _ca_state(leaf2, "user.root") == "absent"
    joins = root.audit("join")
    assert any(e["success"] is False and e.get("leaf_cluster") == "leaf2" for e in joins)

    # a wrong CA pin stops the handshake before the token is sent (a new token file: a retry
    # of the refused spec, still pending, must not pick the fresh token up with the right pin)
    fresh = _token(root)
    _apply_trusted_cluster(leaf2, "org-a", root, fresh["token"], "sha256:" + "0" * 64,
                           token_name="pinned")
    pinned = wait_for(lambda: _condition(leaf2, "org-a", "Stalled").get("reason") ==
                      "PinMismatch" and _condition(leaf2, "org-a", "Stalled"), 20, "the pin")
    assert "does not match the pin" in pinned["message"]

    # disable, re-enable (no new token needed), delete
    (leaf.data_dir / "secrets" / "org-a.token").unlink()
    _apply_trusted_cluster(leaf, "org-a", root, "unused", issued["ca_pin"], enabled=False)
    wait_for(lambda: _ca_state(leaf, "user.root") == "disabled", 20, "the root CA disabled")
    assert _condition(leaf, "org-a", "Ready")["reason"] == "Disabled"
    _apply_trusted_cluster(leaf, "org-a", root, "unused", issued["ca_pin"], enabled=True)
    wait_for(lambda: _ca_state(leaf, "user.root") == "active", 20, "the root CA active again")
    leaf.lmctl("rm", "trustedcluster/org-a")
    wait_for(lambda: all(_ca_state(leaf, f"{t}.root") == "absent"
                         for t in ("user", "host", "tls")), 20, "the root CAs removed")
