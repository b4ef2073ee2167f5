"""Attack: a user's trait values are read as patterns and widen what a role grants.

A role that gives each team its own nodes (``node_labels: {team: '{{external.team}}'}``) let a
user whose ``team`` trait was ``*``, ``^.*$`` or ``c*`` reach every node whatever its team
label. Traits often come from an identity provider the user can edit; they must be literal
text wherever a template puts them: label values (inside the role author's own glob or
``^...$``), label keys, and principal lists where ``*`` means "any".
"""

from __future__ import annotations

import pytest

from limen.api.resources import Resource
from limen.rbac import RoleSet
from rbac_roles import role

OTHER = {"team": "other", "env": "prod"}


def roles(traits: dict[str, list[str]], *resources: Resource) -> RoleSet:
    return RoleSet.from_roles(list(resources), traits)


TEAM = role("team", allow={"logins": ["u"], "node_labels": {"team": "{{external.team}}"}})
PATTERN_TRAITS = ["*", "^.*$", "c*", ".*", "^other$", "oth*", "*er", "^(other|x)$"]


@pytest.mark.parametrize("trait", PATTERN_TRAITS)
def test_a_pattern_in_a_trait_does_not_match_another_team(trait: str) -> None:
    decision = roles({"team": [trait]}, TEAM).check_ssh(OTHER, "u")
    assert not decision.allowed, decision
    assert decision.rule == "allow.node_labels"


@pytest.mark.parametrize("trait", PATTERN_TRAITS)
def test_a_pattern_in_a_trait_matches_only_itself(trait: str) -> None:
    assert roles({"team": [trait]}, TEAM).check_ssh({"team": trait}, "u").allowed


def test_the_plain_trait_still_matches_its_team() -> None:
    assert roles({"team": ["other"]}, TEAM).check_ssh(OTHER, "u").allowed
    assert not roles({"team": ["others"]}, TEAM).check_ssh(OTHER, "u").allowed


def test_a_pattern_among_several_trait_values_adds_nothing() -> None:
    rs = roles({"team": ["blue", "*"]}, TEAM)
    assert rs.check_ssh({"team": "blue"}, "u").allowed
    assert not rs.check_ssh(OTHER, "u").allowed


@pytest.mark.parametrize("trait", [".*", "*", "x|.*", ")(", "["])
def test_the_authors_regular_expression_around_a_trait_quotes_the_trait(trait: str) -> None:
    regex = role("r", allow={"logins": ["u"], "node_labels": {"team": "^team-{{external.t}}$"}})
    rs = roles({"t": [trait]}, regex)
    assert not rs.check_ssh({"team": "team-other"}, "u").allowed
    assert rs.check_ssh({"team": f"team-{trait}"}, "u").allowed
    assert not rs.warnings  # quoted: never an invalid regular expression


def test_the_authors_regular_expression_keeps_its_meaning() -> None:
    regex = role("r", allow={"logins": ["u"],
                             "node_labels": {"team": "^(dev|{{external.t}})-[0-9]+$"}})
    rs = roles({"t": ["ops"]}, regex)
    assert rs.check_ssh({"team": "ops-12"}, "u").allowed
    assert rs.check_ssh({"team": "dev-3"}, "u").allowed
    assert not rs.check_ssh({"team": "other-3"}, "u").allowed


def test_the_authors_glob_around_a_trait_keeps_its_star_only() -> None:
    glob = role("g", allow={"logins": ["u"], "node_labels": {"team": "{{external.t}}-*"}})
    assert roles({"t": ["blue"]}, glob).check_ssh({"team": "blue-1"}, "u").allowed
    assert not roles({"t": ["*"]}, glob).check_ssh({"team": "blue-1"}, "u").allowed
    assert roles({"t": ["*"]}, glob).check_ssh({"team": "*-1"}, "u").allowed


def test_a_trait_star_as_label_key_is_not_the_match_all_selector() -> None:
    keyed = role("k", allow={"logins": ["u"], "node_labels": {"{{external.key}}": "*"}})
    rs = roles({"key": ["*"]}, keyed)
    assert not rs.check_ssh(OTHER, "u").allowed
    assert not rs.check_ssh({}, "u").allowed
    assert roles({"key": ["env"]}, keyed).check_ssh(OTHER, "u").allowed


def test_a_trait_star_in_other_matchers_matches_nothing_more() -> None:
    db = role("db", allow={"db_labels": {"env": "{{external.env}}"},
                           "db_users": ["{{internal.db_users}}"],
                           "db_names": ["{{internal.db_names}}"]})
    rs = roles({"env": ["*"], "db_users": ["*"], "db_names": ["*"]}, db)
    assert not rs.check_db(OTHER, "postgres", "orders").allowed
    rs = roles({"env": ["prod"], "db_users": ["*", "alice"], "db_names": ["*"]}, db)
    assert rs.check_db(OTHER, "alice").allowed
    assert not rs.check_db(OTHER, "postgres").allowed
    assert rs.db_users() == ("alice",)
    assert rs.db_names() == ()
    for field in ("app_labels", "kubernetes_labels", "cluster_labels"):
        labelled = role("l", allow={field: {"team": "{{external.team}}"}})
        compiled = roles({"team": ["*"]}, labelled).roles[0]
        assert not compiled.allow.selector(field).matches(OTHER), field


def test_a_trait_star_in_kubernetes_principals_is_dropped() -> None:
    kube = role("k", allow={"kubernetes_labels": {"*": "*"},
                            "kubernetes_groups": ["{{external.groups}}", "viewers"],
                            "kubernetes_users": ["{{external.users}}"]})
    rs = roles({"groups": ["*", "system:masters"], "users": ["*"]}, kube)
    assert rs.kube_groups() == ("system:masters", "viewers")  # literal values stay
    assert rs.kube_users() == ()
    assert not rs.check_kube(OTHER, groups=["*"]).allowed


def test_a_trait_star_in_logins_does_not_break_the_role() -> None:
    logins = role("l", allow={"logins": ["{{internal.logins}}"], "node_labels": {"*": "*"}})
    rs = roles({"logins": ["*", "alice"]}, logins)
    assert rs.check_ssh(OTHER, "alice").allowed
    assert not rs.check_ssh(OTHER, "*").allowed
    assert rs.allowed_logins() == ("alice",)
    assert not rs.warnings


def test_a_trait_in_a_deny_label_is_literal_too() -> None:
    everything = role("all", allow={"logins": ["u"], "node_labels": {"*": "*"}})
    blocked = role("blocked", deny={"node_labels": {"team": "{{external.blocked}}"}})
    assert roles({"blocked": ["other"]}, everything, blocked).check_ssh(OTHER, "u").rule == (
        "deny.node_labels")
    assert roles({"blocked": ["c*"]}, everything, blocked).check_ssh(OTHER, "u").allowed


def test_the_authors_own_patterns_are_unchanged() -> None:
    authored = role("a", allow={"logins": ["u"], "node_labels": {"team": ["^o.*$", "x*"]}})
    assert roles({}, authored).check_ssh(OTHER, "u").allowed
    assert roles({}, authored).check_ssh({"team": "xyz"}, "u").allowed
    star = role("s", allow={"logins": ["u"], "node_labels": {"team": "*"}})
    assert roles({}, star).check_ssh(OTHER, "u").allowed
