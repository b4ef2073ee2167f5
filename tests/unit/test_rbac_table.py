"""Decision table for the RBAC engine, from Teleport's documented behaviour.

Most cases restate Teleport's ``lib/services/role_test.go`` (TestCheckAccessToServer,
TestCheckAccessToRemoteCluster, TestCheckRuleAccess, TestApplyTraits) and the role reference
(https://goteleport.com/docs/reference/access-controls/roles/); cases marked "Limen" pin a
deliberate Limen choice. Every case asserts the verdict AND the deciding role and rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from limen.api.resources import Kind, Resource
from limen.rbac import RoleSet
from rbac_roles import role

NO_LABELS: dict[str, str] = {}
WORKER = {"role": "worker", "status": "follower"}
DB = {"role": "db", "status": "follower"}
DB_SUFFIX = {"role": "db01", "status": "follower01"}
ALL = {"*": "*"}


@dataclass(frozen=True)
class Case:
    id: str
    roles: list[Resource]
    check: str  # ssh | kube | db | app | cluster | rule
    args: tuple[Any, ...]
    allowed: bool
    role: str | None
    rule: str
    traits: dict[str, list[str]] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)


def ssh(id: str, roles: list[Resource], labels: dict[str, str], login: str, allowed: bool,
        by: str | None, rule: str, **extra: Any) -> Case:
    return Case(id, roles, "ssh", (labels, login), allowed, by, rule, **extra)


ADMIN_ANY = role("a", allow={"logins": ["admin"], "node_labels": ALL})
WORKER_ONLY = role("a", allow={"logins": ["admin"], "node_labels": {"role": "worker"}})
DB_GLOB = role("a", allow={"logins": ["admin"],
                           "node_labels": {"role": "^db(.*)$", "status": "follow*"}})
MFA_PAIR = [
    role("a", allow={"logins": ["root"], "node_labels": {"role": "worker"}},
         options={"require_session_mfa": True}),
    role("b", allow={"logins": ["root"], "node_labels": ALL},
         options={"require_session_mfa": False}),
]
HALVES = [
    role("a", allow={"logins": ["admin"], "node_labels": {"role": "worker"}}),
    role("b", allow={"logins": ["root"], "node_labels": {"role": "db"}}),
]

SSH_CASES = [
    ssh("empty role set has access to nothing", [], WORKER, "root", False, None,
        "allow.node_labels"),
    ssh("wildcard labels allow the login", [ADMIN_ANY], WORKER, "admin", True, "a",
        "allow.logins"),
    ssh("wildcard labels but login not listed", [ADMIN_ANY], WORKER, "root", False, None,
        "allow.logins"),
    ssh("'*': '*' matches a node without labels", [ADMIN_ANY], NO_LABELS, "admin", True, "a",
        "allow.logins"),
    ssh("literal label matches", [WORKER_ONLY], WORKER, "admin", True, "a", "allow.logins"),
    ssh("missing label does not match", [WORKER_ONLY], NO_LABELS, "admin", False, None,
        "allow.node_labels"),
    ssh("different label value does not match", [WORKER_ONLY], DB, "admin", False, None,
        "allow.node_labels"),
    ssh("list values are an OR", [role("a", allow={
        "logins": ["admin"], "node_labels": {"role": ["worker2", "worker"]}})],
        WORKER, "admin", True, "a", "allow.logins"),
    ssh("list values: none matches", [role("a", allow={
        "logins": ["admin"], "node_labels": {"role": ["worker2", "worker"]}})],
        DB, "admin", False, None, "allow.node_labels"),
    ssh("empty list value matches nothing", [role("a", allow={
        "logins": ["admin"], "node_labels": {"role": []}})],
        WORKER, "admin", False, None, "allow.node_labels"),
    ssh("one role is more permissive than another", [
        WORKER_ONLY, role("b", allow={"logins": ["root", "admin"], "node_labels": ALL})],
        DB, "root", True, "b", "allow.logins"),
    ssh("regexp and glob labels match", [DB_GLOB], DB, "admin", True, "a", "allow.logins"),
    ssh("regexp and glob labels match a suffixed value", [DB_GLOB], DB_SUFFIX, "admin", True,
        "a", "allow.logins"),
    ssh("regexp does not match another value", [DB_GLOB], WORKER, "admin", False, None,
        "allow.node_labels"),
    ssh("glob 'dev-*' matches dev-eu", [role("a", allow={
        "logins": ["u"], "node_labels": {"env": "dev-*"}})],
        {"env": "dev-eu"}, "u", True, "a", "allow.logins"),
    ssh("glob is anchored at both ends", [role("a", allow={
        "logins": ["u"], "node_labels": {"env": "dev-*"}})],
        {"env": "xdev-eu"}, "u", False, None, "allow.node_labels"),
    ssh("value '*' matches any value of an existing label", [role("a", allow={
        "logins": ["u"], "node_labels": {"env": "*"}})],
        {"env": "anything"}, "u", True, "a", "allow.logins"),
    ssh("value '*' still needs the label", [role("a", allow={
        "logins": ["u"], "node_labels": {"env": "*"}})],
        {"team": "x"}, "u", False, None, "allow.node_labels"),
    ssh("a literal is not a regexp: '.' is a dot", [role("a", allow={
        "logins": ["u"], "node_labels": {"host": "a.b"}})],
        {"host": "axb"}, "u", False, None, "allow.node_labels"),
    ssh("no logins means no access", [role("a", allow={"node_labels": ALL})],
        WORKER, "root", False, None, "allow.logins"),
    ssh("deny in another role wins", [
        ADMIN_ANY, role("b", deny={"node_labels": {"role": "worker"}})],
        WORKER, "admin", False, "b", "deny.node_labels"),
    ssh("deny labels deny every login on the node", [role("a", allow={
        "logins": ["admin"], "node_labels": ALL}, deny={"node_labels": {"role": "db"}})],
        DB, "admin", False, "a", "deny.node_labels"),
    ssh("deny labels leave other nodes alone", [role("a", allow={
        "logins": ["admin"], "node_labels": ALL}, deny={"node_labels": {"role": "db"}})],
        WORKER, "admin", True, "a", "allow.logins"),
    ssh("deny.logins alone denies that login on every node", [role("a", allow={
        "logins": ["root", "admin"], "node_labels": ALL}, deny={"logins": ["root"]})],
        NO_LABELS, "root", False, "a", "deny.logins"),
    ssh("deny.logins leaves other logins alone", [role("a", allow={
        "logins": ["root", "admin"], "node_labels": ALL}, deny={"logins": ["root"]})],
        NO_LABELS, "admin", True, "a", "allow.logins"),
    ssh("Limen: deny.logins '*' denies every login", [ADMIN_ANY, role("z", deny={
        "logins": ["*"]})], WORKER, "admin", False, "z", "deny.logins"),
    ssh("empty deny labels match nothing", [role("a", allow={
        "logins": ["admin"], "node_labels": ALL}, deny={"node_labels": {}})],
        WORKER, "admin", True, "a", "allow.logins"),
    ssh("two roles each half-matching: labels of one, login of the other", HALVES,
        WORKER, "root", False, None, "allow.logins"),
    ssh("two roles each half-matching, the other way round", HALVES,
        DB, "admin", False, None, "allow.logins"),
    ssh("role requiring MFA, MFA not verified", MFA_PAIR, WORKER, "root", False, "a",
        "options.require_session_mfa"),
    ssh("role requiring MFA does not match: the other role allows", MFA_PAIR, NO_LABELS,
        "root", True, "b", "allow.logins"),
    ssh("role requiring MFA, MFA verified", MFA_PAIR, WORKER, "root", True, "a",
        "allow.logins", kwargs={"mfa_verified": True}),
    ssh("templated logins from internal traits", [role("a", allow={
        "logins": ["{{internal.logins}}"], "node_labels": ALL})],
        WORKER, "bob", True, "a", "allow.logins", traits={"logins": ["alice", "bob"]}),
    ssh("templated logins from external traits with literal text", [role("a", allow={
        "logins": ["{{external.user}}-adm"], "node_labels": ALL})],
        WORKER, "carol-adm", True, "a", "allow.logins", traits={"user": ["carol"]}),
    ssh("a missing trait drops the value", [role("a", allow={
        "logins": ["{{internal.logins}}"], "node_labels": ALL})],
        WORKER, "{{internal.logins}}", False, None, "allow.logins"),
    ssh("email.local takes the local part", [role("a", allow={
        "logins": ["{{email.local(external.email)}}"], "node_labels": ALL})],
        WORKER, "alice", True, "a", "allow.logins",
        traits={"email": ["Alice <alice@example.com>"]}),
    ssh("regexp.replace rewrites matching values", [role("a", allow={
        "logins": ['{{regexp.replace(external.groups, "^dev-(.*)$", "$1-admin")}}'],
        "node_labels": ALL})], WORKER, "alice-admin", True, "a", "allow.logins",
        traits={"groups": ["dev-alice", "prod-bob"]}),
    ssh("regexp.replace drops non-matching values", [role("a", allow={
        "logins": ['{{regexp.replace(external.groups, "^dev-(.*)$", "$1-admin")}}'],
        "node_labels": ALL})], WORKER, "bob-admin", False, None, "allow.logins",
        traits={"groups": ["dev-alice", "prod-bob"]}),
    ssh("an expanded login that is not a valid Unix user is dropped", [role("a", allow={
        "logins": ["{{external.foo}}", "bar"], "node_labels": ALL})],
        WORKER, "-foo", False, None, "allow.logins", traits={"foo": ["-foo"]}),
    ssh("label value templated from a trait", [role("a", allow={
        "logins": ["u"], "node_labels": {"team": "{{external.team}}"}})],
        {"team": "platform"}, "u", True, "a", "allow.logins", traits={"team": ["platform"]}),
    ssh("label values expanding to nothing match nothing", [role("a", allow={
        "logins": ["u"], "node_labels": {"team": "{{external.team}}"}})],
        {"team": "platform"}, "u", False, None, "allow.node_labels"),
    ssh("label key templated (first value wins)", [role("a", allow={
        "logins": ["u"], "node_labels": {"{{external.key}}": "x"}})],
        {"env": "x"}, "u", True, "a", "allow.logins", traits={"key": ["env", "team"]}),
    ssh("templated deny labels", [ADMIN_ANY, role("b", deny={
        "node_labels": {"team": "{{external.blocked}}"}})],
        {"team": "finance"}, "admin", False, "b", "deny.node_labels",
        traits={"blocked": ["finance"]}),
    ssh("deny labels expanding to nothing deny nothing", [ADMIN_ANY, role("b", deny={
        "node_labels": {"team": "{{external.blocked}}"}})],
        {"team": "finance"}, "admin", True, "a", "allow.logins"),
    ssh("Limen: a malformed allow template makes the role grant nothing", [role("a", allow={
        "logins": ["{{internal.logins", "admin"], "node_labels": ALL})],
        WORKER, "admin", False, None, "allow.node_labels"),
    ssh("Limen: a malformed deny template makes the role deny everything", [
        ADMIN_ANY, role("b", deny={"logins": ["{{nope.x}}"]})],
        WORKER, "admin", False, "b", "deny"),
]

KUBE_DEV = role("dev", allow={"kubernetes_labels": {"env": "dev"},
                              "kubernetes_groups": ["developers"],
                              "kubernetes_users": ["IAM#{{external.foo}};"]})
KUBE_CASES = [
    Case("kube group allowed on matching cluster", [KUBE_DEV], "kube",
         ({"env": "dev"}, ["developers"], []), True, "dev", "allow.kubernetes_groups"),
    Case("kube group not granted", [KUBE_DEV], "kube",
         ({"env": "dev"}, ["system:masters"], []), False, None, "allow.kubernetes_groups"),
    Case("kube labels do not match", [KUBE_DEV], "kube",
         ({"env": "prod"}, ["developers"], []), False, None, "allow.kubernetes_labels"),
    Case("deny.kubernetes_labels wins", [KUBE_DEV, role("z", deny={
        "kubernetes_labels": {"env": "dev"}})], "kube",
         ({"env": "dev"}, ["developers"], []), False, "z", "deny.kubernetes_labels"),
    Case("deny.kubernetes_groups without labels applies to every cluster", [
        KUBE_DEV, role("z", deny={"kubernetes_groups": ["developers"]})], "kube",
         ({"env": "dev"}, ["developers"], []), False, "z", "deny.kubernetes_groups"),
    Case("no principal requested: the matching roles grant some", [KUBE_DEV], "kube",
         ({"env": "dev"}, [], []), True, "dev", "allow.kubernetes_labels"),
    Case("no principal requested: the deciding role is one that grants some", [
        role("a", allow={"kubernetes_labels": ALL}), KUBE_DEV], "kube",
         ({"env": "dev"}, [], []), True, "dev", "allow.kubernetes_labels"),
    Case("no principal requested and none granted", [role("a", allow={
        "kubernetes_labels": ALL})], "kube", ({"env": "dev"}, [], []), False, None,
         "allow.kubernetes_groups"),
    Case("templated kube user", [KUBE_DEV], "kube", ({"env": "dev"}, [], ["IAM#bar;"]), True,
         "dev", "allow.kubernetes_users", traits={"foo": ["bar"]}),
    Case("a group from a role that does not match the cluster is not usable", [
        KUBE_DEV, role("ops", allow={"kubernetes_labels": {"env": "prod"},
                                     "kubernetes_groups": ["admins"]})], "kube",
         ({"env": "dev"}, ["admins"], []), False, None, "allow.kubernetes_groups"),
]

DB_DEV = role("dev", allow={"db_labels": {"env": "dev"}, "db_users": ["{{internal.db_users}}"],
                            "db_names": ["{{external.missing}}", "orders"]})
DB_CASES = [
    Case("db user and name allowed", [DB_DEV], "db", ({"env": "dev"}, "alice", "orders"),
         True, "dev", "allow.db_users", traits={"db_users": ["alice"]}),
    Case("db user not allowed", [DB_DEV], "db", ({"env": "dev"}, "postgres", "orders"),
         False, None, "allow.db_users", traits={"db_users": ["alice"]}),
    Case("db name not allowed (the missing trait was dropped)", [DB_DEV], "db",
         ({"env": "dev"}, "alice", "billing"), False, None, "allow.db_names",
         traits={"db_users": ["alice"]}),
    Case("no db name (MySQL): names are not checked", [DB_DEV], "db",
         ({"env": "dev"}, "alice", None), True, "dev", "allow.db_users",
         traits={"db_users": ["alice"]}),
    Case("deny.db_users applies on every database", [DB_DEV, role("z", deny={
        "db_users": ["alice"]})], "db", ({"env": "dev"}, "alice", "orders"),
         False, "z", "deny.db_users", traits={"db_users": ["alice"]}),
    Case("deny.db_names '*' denies every name", [DB_DEV, role("z", deny={
        "db_names": ["*"]})], "db", ({"env": "dev"}, "alice", "orders"),
         False, "z", "deny.db_names", traits={"db_users": ["alice"]}),
    Case("deny.db_labels wins", [DB_DEV, role("z", deny={"db_labels": {"env": "*"}})], "db",
         ({"env": "dev"}, "alice", "orders"), False, "z", "deny.db_labels",
         traits={"db_users": ["alice"]}),
    Case("db labels do not match", [DB_DEV], "db", ({"env": "prod"}, "alice", "orders"),
         False, None, "allow.db_labels", traits={"db_users": ["alice"]}),
    Case("wildcard db users and names", [role("ops", allow={
        "db_labels": ALL, "db_users": ["*"], "db_names": ["*"]})], "db",
         ({}, "postgres", "anything"), True, "ops", "allow.db_users"),
    Case("two db roles each half-matching", [
        role("a", allow={"db_labels": {"env": "dev"}, "db_users": ["alice"]}),
        role("b", allow={"db_labels": {"env": "prod"}, "db_users": ["bob"],
                         "db_names": ["orders"]})],
         "db", ({"env": "dev"}, "alice", "orders"), False, None, "allow.db_names"),
]

APP_CASES = [
    Case("app labels match", [role("a", allow={"app_labels": {"env": "dev"}})], "app",
         ({"env": "dev"},), True, "a", "allow.app_labels"),
    Case("app labels do not match", [role("a", allow={"app_labels": {"env": "dev"}})], "app",
         ({"env": "prod"},), False, None, "allow.app_labels"),
    Case("deny.app_labels wins", [role("a", allow={"app_labels": ALL}),
                                  role("b", deny={"app_labels": {"env": "prod"}})], "app",
         ({"env": "prod"},), False, "b", "deny.app_labels"),
    Case("'*': '*' matches an unlabelled app", [role("a", allow={"app_labels": ALL})], "app",
         ({},), True, "a", "allow.app_labels"),
]

CLUSTER_CASES = [
    Case("empty role set sees no cluster", [], "cluster", ({},), False, None,
         "allow.cluster_labels"),
    Case("no role uses cluster labels: unlabelled cluster allowed", [role("a", allow={
        "logins": ["admin"]})], "cluster", ({},), True, None, "cluster_labels"),
    Case("role without cluster labels: labelled cluster denied", [role("a", allow={
        "logins": ["admin"]})], "cluster", (WORKER,), False, None, "allow.cluster_labels"),
    Case("cluster labels match any of several values", [role("a", allow={
        "cluster_labels": {"role": ["worker2", "worker"]}})], "cluster", (WORKER,), True, "a",
         "allow.cluster_labels"),
    Case("any role using labels makes the set match labels", [
        role("a", allow={"cluster_labels": {"role": "worker"}}), role("b", allow={})],
         "cluster", ({},), False, None, "allow.cluster_labels"),
    Case("deny.cluster_labels wins", [role("a", allow={"cluster_labels": ALL}),
                                      role("b", deny={"cluster_labels": {"role": "db"}})],
         "cluster", (DB,), False, "b", "deny.cluster_labels"),
    Case("regexp cluster labels", [role("a", allow={
        "cluster_labels": {"role": "^db(.*)$", "status": "follow*"}})], "cluster", (DB,),
         True, "a", "allow.cluster_labels"),
]

SESSION_READER = role("a", allow={"rules": [{"resources": ["session"], "verbs": ["read"]}]})
RULE_CASES = [
    Case("rule allows read of sessions", [SESSION_READER], "rule", ("session", "read"), True,
         "a", "allow.rules"),
    Case("rule does not allow list", [SESSION_READER], "rule", ("session", "list"), False,
         None, "allow.rules"),
    Case("empty role set may do nothing", [], "rule", ("user", "create"), False, None,
         "allow.rules"),
    Case("deny rule overrides allow rule", [role("a", allow={
        "rules": [{"resources": ["session"], "verbs": ["create"]}]}, deny={
        "rules": [{"resources": ["session"], "verbs": ["create"]}]})],
         "rule", ("session", "create"), False, "a", "deny.rules"),
    Case("wildcard resources and verbs", [role("a", allow={
        "rules": [{"resources": ["*"], "verbs": ["*"]}]})], "rule", ("token", "delete"), True,
         "a", "allow.rules"),
    Case("deny with wildcard verbs on one kind", [
        role("a", allow={"rules": [{"resources": ["*"], "verbs": ["*"]}]}),
        role("b", deny={"rules": [{"resources": ["role"], "verbs": ["*"]}]})],
         "rule", ("role", "update"), False, "b", "deny.rules"),
    Case("deny on one kind leaves the others", [
        role("a", allow={"rules": [{"resources": ["*"], "verbs": ["*"]}]}),
        role("b", deny={"rules": [{"resources": ["role"], "verbs": ["*"]}]})],
         "rule", ("user", "read"), True, "a", "allow.rules"),
    Case("kind names are normalised (TrustedCluster)", [role("a", allow={
        "rules": [{"resources": ["trusted_cluster"], "verbs": ["list"]}]})],
         "rule", (Kind.TRUSTED_CLUSTER, "list"), True, "a", "allow.rules"),
]

CASES = SSH_CASES + KUBE_CASES + DB_CASES + APP_CASES + CLUSTER_CASES + RULE_CASES


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decision(case: Case) -> None:
    role_set = RoleSet.from_roles(case.roles, case.traits)
    method = getattr(role_set, f"check_{case.check}")
    decision = method(*case.args, **case.kwargs)
    assert (decision.allowed, decision.role, decision.rule) == (
        case.allowed, case.role, case.rule), decision.reason
    assert decision.reason


@dataclass(frozen=True)
class OptionCase:
    id: str
    options: list[dict[str, Any]]
    field: str
    expected: Any


OPTION_CASES = [
    OptionCase("shortest max_session_ttl wins", [{"max_session_ttl": "8h"},
                                                 {"max_session_ttl": "4h"}],
               "max_session_ttl", timedelta(hours=4)),
    OptionCase("max_session_ttl defaults to 30h", [{}], "max_session_ttl", timedelta(hours=30)),
    OptionCase("an unset max_session_ttl counts as 30h", [{"max_session_ttl": "40h"}, {}],
               "max_session_ttl", timedelta(hours=30)),
    OptionCase("forward_agent when any role allows", [{"forward_agent": False},
                                                      {"forward_agent": True}],
               "forward_agent", True),
    OptionCase("forward_agent off by default", [{}], "forward_agent", False),
    OptionCase("port_forwarding: an explicit allow wins", [{"port_forwarding": False},
                                                          {"port_forwarding": True}],
               "port_forwarding", True),
    OptionCase("port_forwarding: an explicit deny beats unset", [{"port_forwarding": False},
                                                                {}],
               "port_forwarding", False),
    OptionCase("port_forwarding implicitly on", [{}], "port_forwarding", True),
    OptionCase("ssh_file_copy off when any role disables it", [{"ssh_file_copy": False}, {}],
               "ssh_file_copy", False),
    OptionCase("shortest non-zero client_idle_timeout", [
        {"client_idle_timeout": "1h"}, {"client_idle_timeout": "never"},
        {"client_idle_timeout": "30m"}], "client_idle_timeout", timedelta(minutes=30)),
    OptionCase("no client_idle_timeout by default", [{}, {"client_idle_timeout": "never"}],
               "client_idle_timeout", None),
    OptionCase("disconnect_expired_cert when any role asks", [
        {"disconnect_expired_cert": True}, {}], "disconnect_expired_cert", True),
    OptionCase("require_session_mfa when any role asks", [{"require_session_mfa": True}, {}],
               "require_session_mfa", True),
    OptionCase("record_session: a strict default wins over unset", [
        {"record_session": {"default": "strict"}}, {}], "record_session", "strict"),
    OptionCase("record_session: explicit ssh best_effort beats a strict default", [
        {"record_session": {"default": "strict"}},
        {"record_session": {"ssh": "best_effort"}}], "record_session", "best_effort"),
    OptionCase("record_session: explicit ssh strict wins", [
        {"record_session": {"ssh": "strict"}},
        {"record_session": {"default": "best_effort"}}], "record_session", "strict"),
    OptionCase("record_session: best_effort by default", [{}], "record_session",
               "best_effort"),
    OptionCase("Limen: record_session off only when no role records", [
        {"record_session": {"default": "off"}}, {}], "record_session", "best_effort"),
    OptionCase("Limen: record_session off when every role says off", [
        {"record_session": {"default": "off"}}, {"record_session": {"ssh": "off"}}],
               "record_session", "off"),
    OptionCase("lock strict when any role says strict", [{"lock": "best_effort"},
                                                        {"lock": "strict"}], "lock", "strict"),
    OptionCase("lock falls back to the cluster default", [{}], "lock", None),
    OptionCase("smallest non-zero max_sessions", [{"max_sessions": 0}, {"max_sessions": 5},
                                                  {"max_sessions": 3}], "max_sessions", 3),
]


@pytest.mark.parametrize("case", OPTION_CASES, ids=[c.id for c in OPTION_CASES])
def test_option_merging(case: OptionCase) -> None:
    roles = [role(f"r{i}", options=opts) for i, opts in enumerate(case.options)]
    assert getattr(RoleSet.from_roles(roles, {}).options, case.field) == case.expected
