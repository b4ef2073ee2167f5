"""The access review agrees with enforcement: a property test over generated states.

Hypothesis generates roles (allow and deny logins, labels with literals and wildcards,
database users, Kubernetes groups, apps, cluster labels, ``create_db_user``), users (roles, a
``logins`` trait) and resources (SSH nodes, databases, some creating their users with an
``admin_user``, Kubernetes clusters, apps, leaf clusters), then a second
state: changed roles and users. For every user x resource x principal of a fixed universe the
enforcement engine (``AccessChecker.explain``, what ``lmctl access check`` calls) is asked on
both states; the pairs whose answer changed must be exactly the grants the diff reports, each
``+`` with the deciding role and rule the engine gives on the new state.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from limen.api.resources import Kind, Resource
from limen.gitops.access_diff import AccessState, access_diff
from limen.rbac import AccessChecker

LOGINS = ("root", "ubuntu", "alice")
DB_USERS = ("postgres", "ro", "alice", "bob")  # own names of the users (create_db_user)
DB_NAMES = ("app", "payments")
GROUPS = ("devs", "system:masters")
LABELS = st.dictionaries(st.sampled_from(("env", "team", "region")),
                         st.sampled_from(("prod", "dev", "a")),
                         max_size=2)
SELECTOR = st.one_of(
    st.just({}), st.just({"*": "*"}),
    st.dictionaries(st.sampled_from(("env", "team")),
                    st.sampled_from(("prod", "dev", "*", "p*", ["prod", "dev"])), min_size=1,
                    max_size=2))


@st.composite
def conditions(draw: st.DrawFn, deny: bool) -> dict[str, Any]:
    logins = ["{{internal.logins}}", "root", "ubuntu"] if not deny else list(LOGINS)
    out: dict[str, Any] = {
        "logins": draw(st.lists(st.sampled_from(logins), max_size=2, unique=True)),
        "node_labels": draw(SELECTOR), "db_labels": draw(SELECTOR),
        "db_users": draw(st.lists(st.sampled_from(DB_USERS), max_size=2, unique=True)),
        "db_names": draw(st.lists(st.sampled_from(DB_NAMES), max_size=2, unique=True)),
        "kubernetes_labels": draw(SELECTOR),
        "kubernetes_groups": draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)),
        "app_labels": draw(SELECTOR), "cluster_labels": draw(SELECTOR),
    }
    if deny:  # deny sections are mostly empty: otherwise everything is denied
        keep = draw(st.sampled_from(("logins", "node_labels", "db_users", "db_names",
                                     "kubernetes_groups")))
        out = {keep: out[keep]}
    return out


@st.composite
def roles(draw: st.DrawFn) -> list[Resource]:
    out = []
    for name in ("r1", "r2", "r3"):
        spec: dict[str, Any] = {"allow": draw(conditions(False))}
        if draw(st.booleans()):
            spec["deny"] = draw(conditions(True))
        if draw(st.integers(0, 3)) == 0:
            spec["options"] = {"create_db_user": True}
        out.append(Resource(Kind.ROLE, name, spec))
    return out


@st.composite
def users(draw: st.DrawFn) -> list[Resource]:
    out = []
    for name in ("alice", "bob"):
        if draw(st.integers(0, 4)) == 0:
            continue
        spec = {"roles": draw(st.lists(st.sampled_from(("r1", "r2", "r3")), max_size=3,
                                       unique=True)),
                "traits": {"logins": draw(st.lists(st.sampled_from(LOGINS), max_size=2))}}
        out.append(Resource(Kind.USER, name, spec))
    return out


@st.composite
def targets(draw: st.DrawFn) -> list[Resource]:
    out = []
    for i, kind in enumerate(("ssh", "ssh", "db", "db", "kube", "app")):
        spec: dict[str, Any] = {"kind": kind}
        if kind == "db" and draw(st.booleans()):  # it creates its users (create_db_user)
            spec["admin_user"] = {"name": "limen-admin"}
        out.append(Resource(Kind.RESOURCE, f"{kind}-{i}", spec, draw(LABELS)))
    out.append(Resource(Kind.REMOTE_CLUSTER, "leaf", {}, draw(LABELS)))
    return out


def _universe(target: Resource) -> list[tuple[str, str, dict[str, Any]]]:
    kind = target.spec.get("kind", "cluster")
    if kind == "ssh":
        return [(kind, p, {"login": p}) for p in LOGINS]
    if kind == "db":
        return [(kind, u, {"db_user": u}) for u in DB_USERS] + [
            (kind, f"{u}/{n}", {"db_user": u, "db_name": n}) for u in DB_USERS for n in DB_NAMES]
    if kind == "kube":
        return [(kind, f"group/{g}", {"kube_groups": [g]}) for g in GROUPS]
    return [(str(kind), "", {})]


def _allowed(objects: list[Resource], found: list[Resource]) -> dict[tuple[str, ...], Any]:
    role_map = {r.name: r for r in objects if r.kind is Kind.ROLE}
    out = {}
    for user in (r for r in objects if r.kind is Kind.USER):
        checker = AccessChecker.for_user(user.name, user.spec["roles"], user.spec["traits"],
                                         role_map)
        for target in found:
            for kind, principal, args in _universe(target):
                decision = checker.explain(target, **args)
                if decision.allowed:
                    out[(user.name, kind, principal, target.name)] = decision
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(roles(), users(), roles(), users(), targets(), targets(), st.booleans())
def test_every_reported_grant_is_what_enforcement_decides(
        roles_before: list[Resource], users_before: list[Resource], roles_after: list[Resource],
        users_after: list[Resource], found: list[Resource], relabelled: list[Resource],
        moved: bool) -> None:
    found_after = relabelled if moved else found
    before = roles_before + users_before + found
    after = roles_after + users_after + found_after
    diff = access_diff(AccessState.build(before), AccessState.build(after))
    reported = {(c.sign, c.user, c.kind, c.principal, t): c
                for c in diff.changes if c.kind != "rule" for t in c.targets}
    allowed_before = _allowed(before, found)
    allowed_after = _allowed(after, found_after)
    expected = {("+", *k) for k in allowed_after.keys() - allowed_before.keys()}
    expected |= {("-", *k) for k in allowed_before.keys() - allowed_after.keys()}
    assert set(reported) == expected
    for key, change in reported.items():
        if change.sign == "+":
            decision = allowed_after[key[1:]]
            assert (change.role, change.rule) == (decision.role, decision.rule)
