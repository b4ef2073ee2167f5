"""AccessChecker (explain / describe for ``lmctl access check``), certificate contents of a
RoleSet, warnings for broken or missing roles, and the example roles of the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from limen.api.resources import Kind, Resource
from limen.errors import BadParameter
from limen.rbac import AccessChecker, RoleSet, describe, rule_kind

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"


def role(name: str, **spec: Any) -> Resource:
    return Resource(kind=Kind.ROLE, name=name, spec=spec)


def target(kind: str, name: str = "t", **labels: str) -> Resource:
    return Resource(kind=Kind.RESOURCE, name=name, spec={"kind": kind}, labels=labels)


DEV = role("dev", allow={
    "logins": ["{{internal.logins}}", "ubuntu"], "node_labels": {"env": ["dev", "staging"]},
    "db_labels": {"env": "dev"}, "db_users": ["{{internal.db_users}}", "reader"],
    "db_names": ["*"], "kubernetes_labels": {"env": "dev"},
    "kubernetes_groups": ["developers"], "kubernetes_users": ["dev-sa"],
    "app_labels": {"env": "dev"},
}, deny={"logins": ["root"], "db_users": ["reader"], "kubernetes_groups": ["developers"]})
OPS = role("ops", allow={"logins": ["root"], "node_labels": {"*": "*"},
                         "kubernetes_labels": {"env": "prod"},
                         "kubernetes_groups": ["admins"]})
TRAITS = {"logins": ["alice"], "db_users": ["alice"]}


def test_certificate_logins_are_every_allowed_login() -> None:
    role_set = RoleSet.from_roles([DEV, OPS], TRAITS)
    # GetAllLogins: deny is enforced at the node, not removed from the certificate.
    assert role_set.allowed_logins() == ("alice", "root", "ubuntu")


def test_logins_for_a_node_apply_labels_and_deny() -> None:
    role_set = RoleSet.from_roles([DEV, OPS], TRAITS)
    assert role_set.allowed_logins({"env": "dev"}) == ("alice", "ubuntu")
    assert role_set.allowed_logins({"env": "prod"}) == ()


def test_kube_groups_for_the_certificate_and_for_a_cluster() -> None:
    role_set = RoleSet.from_roles([DEV, OPS], TRAITS)
    assert role_set.kube_groups() == ("admins", "developers")
    assert role_set.kube_users() == ("dev-sa",)
    # On a dev cluster: developers is denied everywhere (empty deny labels), dev-sa remains.
    assert role_set.kube_principals({"env": "dev"}) == ((), ("dev-sa",))
    assert role_set.kube_principals({"env": "prod"}) == (("admins",), ())


def test_db_users_for_the_certificate_subtract_denied_users() -> None:
    role_set = RoleSet.from_roles([DEV], TRAITS)
    assert role_set.db_users() == ("alice",)
    assert role_set.db_names() == ("*",)
    wildcard_deny = role("z", deny={"db_users": ["*"]})
    assert RoleSet.from_roles([DEV, wildcard_deny], TRAITS).db_users() == ()


def test_a_role_with_a_bad_allow_section_grants_nothing_and_is_reported() -> None:
    bad = role("bad", allow={"logins": ["alice"], "node_labels": {"env": "^(dev$"}})
    role_set = RoleSet.from_roles([bad], {})
    assert role_set.check_ssh({"env": "dev"}, "alice", mfa_verified=True).allowed is False
    assert len(role_set.warnings) == 1
    assert "bad" in role_set.warnings[0]
    assert "grants nothing" in role_set.warnings[0]


def test_a_role_with_a_bad_deny_section_denies_everything() -> None:
    bad = role("bad", deny={"node_labels": {"*": "prod"}})
    role_set = RoleSet.from_roles([OPS, bad], {})
    decision = role_set.check_rule("role", "read")
    assert (decision.allowed, decision.role, decision.rule) == (False, "bad", "deny")
    assert "denies everything" in role_set.warnings[0]


def test_a_bad_option_breaks_the_role_fail_closed() -> None:
    bad = role("bad", options={"max_session_ttl": "forever"}, allow={"logins": ["root"]})
    role_set = RoleSet.from_roles([OPS, bad], {})
    assert role_set.check_ssh({}, "root", mfa_verified=True).rule == "deny"
    assert role_set.warnings


def test_allow_logins_wildcard_is_rejected_like_teleport() -> None:
    role_set = RoleSet.from_roles([role("w", allow={"logins": ["*"], "node_labels": {}})], {})
    assert "wildcard" in role_set.warnings[0]


def test_non_role_resources_are_ignored_with_a_warning() -> None:
    user = Resource(kind=Kind.USER, name="alice", spec={"roles": ["dev"]})
    role_set = RoleSet.from_roles([user], {})
    assert role_set.roles == ()
    assert role_set.warnings == ("User/alice is not a Role; ignored",)


def test_traits_given_as_a_bare_string_are_one_value() -> None:
    role_set = RoleSet.from_roles([DEV], {"logins": "alice"})
    assert "alice" in role_set.allowed_logins()


def test_checker_reports_missing_roles() -> None:
    checker = AccessChecker.for_user("alice", ["dev", "ghost"], TRAITS, [DEV])
    assert checker.roles.names == ("dev",)
    assert checker.warnings == ("role 'ghost' does not exist; it grants nothing",)


@pytest.mark.parametrize(("resource", "kwargs", "allowed", "rule"), [
    (target("ssh", env="dev"), {"login": "alice"}, True, "allow.logins"),
    (target("ssh", env="dev"), {"login": "root"}, False, "deny.logins"),
    (target("db", env="dev"), {"db_user": "alice", "db_name": "orders"}, True,
     "allow.db_users"),
    (target("kube", env="dev"), {"kube_users": ["dev-sa"]}, True, "allow.kubernetes_users"),
    (target("app", env="dev"), {}, True, "allow.app_labels"),
    (Resource(kind=Kind.TRUSTED_CLUSTER, name="leaf"), {}, True, "cluster_labels"),
    (Resource(kind=Kind.ROLE, name="dev"), {"verb": "update"}, False, "allow.rules"),
])
def test_explain_picks_the_check_for_the_target(resource: Resource, kwargs: dict[str, Any],
                                                allowed: bool, rule: str) -> None:
    checker = AccessChecker.for_user("alice", ["dev"], TRAITS, {"dev": DEV})
    decision = checker.explain(resource, **kwargs)
    assert (decision.allowed, decision.rule) == (allowed, rule)


@pytest.mark.parametrize(("kind", "missing"), [("ssh", "--login"), ("db", "--db-user")])
def test_explain_asks_for_the_principal(kind: str, missing: str) -> None:
    checker = AccessChecker.for_user("alice", ["dev"], TRAITS, [DEV])
    with pytest.raises(BadParameter, match=missing):
        checker.explain(target(kind))


def test_describe_prints_verdict_role_rule_and_warnings() -> None:
    checker = AccessChecker.for_user("alice", ["dev", "ghost"], TRAITS, [DEV])
    server = target("ssh", name="web-1", env="prod")
    text = describe(checker, server, checker.explain(server, login="alice"), principal="alice")
    assert text.splitlines() == [
        "DENIED: alice -> Resource/web-1 as alice",
        "  role:   (none)",
        "  rule:   allow.node_labels",
        "  reason: the roles allowing login 'alice' (dev) do not match the node's labels",
        "  warning: role 'ghost' does not exist; it grants nothing",
    ]


def test_describe_mentions_required_mfa() -> None:
    mfa = role("mfa", allow={"logins": ["root"], "node_labels": {"*": "*"}},
               options={"require_session_mfa": True})
    checker = AccessChecker.for_user("bob", ["mfa"], {}, [mfa])
    server = target("ssh", name="db-1")
    denied = checker.explain(server, login="root")
    assert (denied.allowed, denied.rule, denied.mfa_required) == (
        False, "options.require_session_mfa", True)
    allowed = checker.explain(server, login="root", mfa_verified=True)
    assert allowed.allowed
    assert "per-session MFA" in describe(checker, server, allowed)


@pytest.mark.parametrize(("kind", "expected"), [
    (Kind.TRUSTED_CLUSTER, "trusted_cluster"), ("TrustedCluster", "trusted_cluster"),
    ("roles", "role"), ("session", "session"), ("*", "*"), (Kind.CERT_AUTHORITY,
                                                           "cert_authority"),
])
def test_rule_kind_names(kind: str | Kind, expected: str) -> None:
    assert rule_kind(kind) == expected


def _load(path: Path) -> list[Resource]:
    return [Resource.from_document(doc) for doc in yaml.safe_load_all(path.read_text())]


def test_example_roles_behave_as_their_comments_say() -> None:
    roles = [r for f in sorted((EXAMPLES / "roles").glob("*.yaml")) for r in _load(f)]
    users = {u.name: u for u in _load(EXAMPLES / "users" / "people.yaml")}
    server = _load(EXAMPLES / "resources" / "servers.yaml")[0]

    def checker(name: str) -> AccessChecker:
        spec = users[name].spec
        return AccessChecker.for_user(name, spec["roles"], spec.get("traits"), roles)

    alice, bob, carol = checker("alice"), checker("bob"), checker("carol")
    assert alice.warnings == bob.warnings == carol.warnings == ()
    assert alice.explain(server, login="ubuntu").allowed
    assert not alice.explain(server, login="root").allowed
    assert alice.roles.check_ssh({"env": "prod", "team": "platform"}, "ubuntu").rule == \
        "deny.node_labels"
    assert bob.explain(server, login="root").allowed
    assert bob.roles.options.record_session == "strict"
    assert bob.roles.check_rule("trusted_cluster", "update").allowed
    assert carol.explain(server, login="carol").rule == "deny.node_labels"
    assert carol.roles.check_rule("event", "list").allowed
    assert not carol.roles.check_rule("event", "delete").allowed
