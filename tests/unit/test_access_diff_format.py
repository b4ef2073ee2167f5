"""The access review's grouping and output: folded lines for wide changes, counts per user and
resource, admin rules and removed resources, the Markdown comment, and the inventory file's
checks (``limen.gitops.access_diff``, ``access_diff_format``, ``access_diff_inventory``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from limen.api.resources import Kind, Resource
from limen.errors import BadParameter
from limen.gitops.access_diff import AccessState, access_diff
from limen.gitops.access_diff_format import access_json, render_markdown, render_text
from limen.gitops.access_diff_inventory import inventory_document, read_inventory


def _role(name: str, **allow: object) -> Resource:
    return Resource(Kind.ROLE, name, {"allow": dict(allow)})


def _user(name: str, *roles: str) -> Resource:
    return Resource(Kind.USER, name, {"roles": list(roles), "traits": {"logins": [name]},
                                      "password_hash": "never exported"})


def _nodes(count: int, env: str) -> list[Resource]:
    return [Resource(Kind.RESOURCE, f"{env}-{i}", {"kind": "ssh"}, {"env": env, "n": str(i)})
            for i in range(count)]


def test_a_wide_grant_folds_into_one_line_with_counts() -> None:
    nodes = _nodes(8, "prod") + _nodes(2, "dev")
    before = [_role("ops", logins=["{{internal.logins}}"], node_labels={"env": "dev"}),
              _user("alice", "ops"), _user("bob", "ops"), *nodes]
    after = [_role("ops", logins=["{{internal.logins}}"], node_labels={"env": "*"}),
             _user("alice", "ops"), _user("bob", "ops"), *nodes]
    diff = access_diff(AccessState.build(before), AccessState.build(after))
    assert render_text(diff) == [
        "+ alice  ssh alice@{8 resources: prod-0, prod-1, prod-2, …}  (role ops: allow.logins,"
        " node_labels env=*)  RISKY: wildcard labels",
        "+ bob  ssh bob@{8 resources: prod-0, prod-1, prod-2, …}  (role ops: allow.logins,"
        " node_labels env=*)  RISKY: wildcard labels",
        "Access: 16 grants added, 0 removed, 2 users; 16 risky",
        "  per user: alice 8, bob 8",
        "  per resource: ssh prod-0 2, ssh prod-1 2, ssh prod-2 2, ssh prod-3 2, ssh prod-4 2, "
        "ssh prod-5 2, ssh prod-6 2, ssh prod-7 2",
    ]
    summary = access_json(diff)["summary"]
    assert (summary["added"], summary["risky"], summary["users"]) == (16, 16, 2)


def test_admin_rules_and_a_removed_resource() -> None:
    node = _nodes(1, "prod")
    before = [_role("ops", logins=["ubuntu"], node_labels={"env": "prod"}),
              _user("carol", "ops"), *node]
    after = [_role("ops", logins=["ubuntu"], node_labels={"env": "prod"},
                   rules=[{"resources": ["user"], "verbs": ["create"]}]),
             _user("carol", "ops")]
    diff = access_diff(AccessState.build(before), AccessState.build(after))
    assert render_text(diff)[:2] == [
        "+ carol  rule create user  (role ops: allow.rules)  RISKY: admin rules",
        "- carol  ssh ubuntu@prod-0  (resource removed)",
    ]
    markdown = render_markdown(diff)
    assert markdown.startswith("### Access review\n\n**Access: 1 grant added, 1 removed, "
                               "1 user; 1 risky**\n")
    risky, folded = markdown.split("<details>", 1)
    assert "+ carol  rule create user" in risky
    assert "- carol  ssh ubuntu@prod-0" not in risky
    assert "- carol  ssh ubuntu@prod-0" in folded


def test_nothing_changes_when_nothing_that_decides_access_does() -> None:
    state = [_role("ops", logins=["ubuntu"], node_labels={"env": "prod"}), _user("dan", "ops"),
             *_nodes(3, "prod")]
    diff = access_diff(AccessState.build(state), AccessState.build(list(state)))
    assert diff.empty
    assert render_text(diff) == ["Access: 0 grants added, 0 removed, 0 users; 0 risky"]
    assert "No user gains or loses access." in render_markdown(diff)


def test_the_inventory_keeps_no_secrets_and_reads_back(tmp_path: Path) -> None:
    objects = [_user("erin", "ops"), _role("ops", logins=["ubuntu"]), *_nodes(1, "dev"),
               Resource(Kind.TOKEN, "t", {"secret": "x"})]
    document = inventory_document(objects, [{"hostname": "web1", "host_id": "h1",
                                             "name": "h1", "labels": {"env": "dev"},
                                             "address": "10.0.0.9:22"}])
    text = json.dumps(document)
    assert "never exported" not in text
    assert '"Token"' not in text
    path = tmp_path / "inventory.json"
    path.write_text(text, encoding="utf-8")
    found, nodes = read_inventory(path)
    assert sorted(r.key for r in found) == ["Resource/dev-0", "Role/ops", "User/erin"]
    assert [(t.kind, t.name, t.labels) for t in nodes] == [("ssh", "web1", (("env", "dev"),))]


@pytest.mark.parametrize(("text", "message"), [
    ("kind: Role\n", "is not an inventory"),
    ("kind: Inventory\nversion: 2\n", "inventory version 2 is not 1"),
    ("kind: Inventory\nversion: 1\nnodes: 3\n", "nodes must be a list of maps"),
])
def test_a_bad_inventory_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadParameter, match=message):
        read_inventory(path)
