"""Properties of the RBAC engine over random roles and requests (hypothesis).

- adding a deny-only role never grants anything that was denied;
- adding roles without a deny section never removes an allow (allow is monotone in roles);
- removing every deny section never removes an allow;
- decisions, certificate contents and options do not depend on the order of the roles.

Leaf-cluster visibility (``check_cluster``) is left out of the monotonicity properties on
purpose: Teleport grants an unlabelled cluster to a NON-EMPTY role set in which no role uses
``cluster_labels`` (backwards compatibility), so adding any role to an empty set can show such
a cluster, and adding a role with cluster labels can hide it.
``test_cluster_compatibility_rule_is_not_monotone`` pins both exceptions.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from limen.api.resources import Kind, Resource
from limen.rbac import Decision, RoleSet

KEYS = ["env", "team"]
VALUES = ["dev", "prod", "ops"]
PATTERNS = [*VALUES, "*", "d*", "^p.*$"]
LOGINS = ["root", "alice", "{{internal.logins}}"]
USERS = ["alice", "bob", "*"]
KINDS = ["role", "user", "token", "session", "*"]
VERBS = ["list", "read", "create", "update", "delete", "*"]
TRAITS = {"logins": ["alice", "bob"]}

labels = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=2)
selector = st.one_of(
    st.just({"*": "*"}),
    st.dictionaries(st.sampled_from(KEYS),
                    st.one_of(st.sampled_from(PATTERNS),
                              st.lists(st.sampled_from(PATTERNS), max_size=2)),
                    max_size=2),
)
rules = st.lists(st.fixed_dictionaries({
    "resources": st.lists(st.sampled_from(KINDS), min_size=1, max_size=2),
    "verbs": st.lists(st.sampled_from(VERBS), min_size=1, max_size=2),
}), max_size=2)


def conditions(*, allow: bool) -> st.SearchStrategy[dict[str, Any]]:
    logins = [x for x in LOGINS if x != "*"] if allow else [*LOGINS, "*"]
    return st.fixed_dictionaries({}, optional={
        "logins": st.lists(st.sampled_from(logins), max_size=2),
        "node_labels": selector,
        "db_labels": selector,
        "db_users": st.lists(st.sampled_from(USERS), max_size=2),
        "db_names": st.lists(st.sampled_from(["orders", "*"]), max_size=2),
        "kubernetes_labels": selector,
        "kubernetes_groups": st.lists(st.sampled_from(["dev", "admin", "*"]), max_size=2),
        "app_labels": selector,
        "cluster_labels": selector,
        "rules": rules,
    })


options = st.fixed_dictionaries({}, optional={"require_session_mfa": st.booleans()})


def roles_strategy(*, with_deny: bool = True, with_allow: bool = True,
                   max_size: int = 4) -> st.SearchStrategy[list[Resource]]:
    optional: dict[str, st.SearchStrategy[Any]] = {"options": options}
    if with_allow:
        optional["allow"] = conditions(allow=True)
    if with_deny:
        optional["deny"] = conditions(allow=False)
    spec = st.fixed_dictionaries({}, optional=optional)
    one = st.builds(lambda name, s: Resource(kind=Kind.ROLE, name=name, spec=s),
                    st.sampled_from(["a", "b", "c", "d"]), spec)
    return st.lists(one, max_size=max_size)


queries = st.lists(st.one_of(
    st.tuples(st.just("ssh"), labels, st.sampled_from(["root", "alice", "bob"])),
    st.tuples(st.just("db"), labels, st.sampled_from(["alice", "bob"]),
              st.sampled_from(["orders", "billing", None])),
    st.tuples(st.just("kube"), labels, st.lists(st.sampled_from(["dev", "admin"]), max_size=1)),
    st.tuples(st.just("app"), labels),
    st.tuples(st.just("cluster"), labels),
    st.tuples(st.just("rule"), st.sampled_from(KINDS[:-1]), st.sampled_from(VERBS[:-1])),
), min_size=1, max_size=6)


def decide(role_set: RoleSet, query: tuple[Any, ...]) -> Decision:
    kind, *args = query
    if kind == "ssh":
        return role_set.check_ssh(args[0], args[1], mfa_verified=True)
    if kind == "db":
        return role_set.check_db(args[0], args[1], args[2], mfa_verified=True)
    if kind == "kube":
        return role_set.check_kube(args[0], args[1], mfa_verified=True)
    if kind == "app":
        return role_set.check_app(args[0], mfa_verified=True)
    if kind == "cluster":
        return role_set.check_cluster(args[0])
    return role_set.check_rule(args[0], args[1])


def build(roles: list[Resource]) -> RoleSet:
    return RoleSet.from_roles(roles, TRAITS)


SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(roles_strategy(), roles_strategy(with_allow=False, max_size=1), queries)
def test_adding_a_deny_role_never_grants(roles: list[Resource], extra: list[Resource],
                                         asked: list[tuple[Any, ...]]) -> None:
    before, after = build(roles), build(roles + extra)
    for query in asked:
        if query[0] != "cluster" and decide(after, query).allowed:
            assert decide(before, query).allowed, query


@SETTINGS
@given(roles_strategy(), roles_strategy(with_deny=False, max_size=2), queries)
def test_adding_roles_without_deny_never_removes_an_allow(
        roles: list[Resource], extra: list[Resource], asked: list[tuple[Any, ...]]) -> None:
    before, after = build(roles), build(roles + extra)
    for query in asked:
        if query[0] != "cluster" and decide(before, query).allowed:
            assert decide(after, query).allowed, query


@SETTINGS
@given(roles_strategy(), queries)
def test_removing_deny_sections_never_removes_an_allow(
        roles: list[Resource], asked: list[tuple[Any, ...]]) -> None:
    without_deny = [r.replace(spec={k: v for k, v in r.spec.items() if k != "deny"})
                    for r in roles]
    before, after = build(roles), build(without_deny)
    for query in asked:
        if query[0] != "cluster" and decide(before, query).allowed:
            assert decide(after, query).allowed, query


@SETTINGS
@given(roles_strategy(max_size=5), st.randoms(use_true_random=False), queries, labels)
def test_decisions_do_not_depend_on_role_order(
        roles: list[Resource], rnd: Any, asked: list[tuple[Any, ...]],
        node: dict[str, str]) -> None:
    shuffled = list(roles)
    rnd.shuffle(shuffled)
    one, two = build(roles), build(shuffled)
    for query in asked:
        assert decide(one, query) == decide(two, query), query
    assert one.options == two.options
    assert one.warnings == two.warnings
    assert one.allowed_logins() == two.allowed_logins()
    assert one.allowed_logins(node) == two.allowed_logins(node)
    assert one.kube_principals(node) == two.kube_principals(node)
    assert (one.db_users(), one.db_names()) == (two.db_users(), two.db_names())


def test_cluster_compatibility_rule_is_not_monotone() -> None:
    plain = Resource(kind=Kind.ROLE, name="a", spec={"allow": {"logins": ["root"]}})
    labelled = Resource(kind=Kind.ROLE, name="b",
                        spec={"allow": {"cluster_labels": {"env": "dev"}}})
    deny_only = Resource(kind=Kind.ROLE, name="c", spec={"deny": {"logins": ["root"]}})
    assert not build([]).check_cluster({}).allowed
    assert build([deny_only]).check_cluster({}).allowed
    assert build([plain]).check_cluster({}).allowed
    assert not build([plain, labelled]).check_cluster({}).allowed
