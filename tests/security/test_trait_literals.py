"""Attack: trait values as patterns widen access (end to end, on a running cluster).

The access repository gives each team its nodes with ``node_labels: {team:
'{{external.team}}'}``. Users whose ``team`` trait is ``*``, ``^.*$`` or ``c*`` (an identity
provider field they may control) were allowed on a server labelled ``team=other``. Synced from
Git by ``limen start --gitops``, ``lmctl access check`` must deny them and allow only the user
whose trait is exactly ``other``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from integration.cluster import ClusterFactory, LimenCluster, describe

from .attacks import assert_no_traceback, write

ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: team}
spec:
  allow:
    logins: [u]
    node_labels: {team: '{{external.team}}'}
"""
SERVER = """\
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata:
  name: other-box
  labels: {team: other}
spec: {kind: ssh, address: 127.0.0.1:2222, hostname: other-box}
"""
USER = """\
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {{name: {name}}}
spec:
  roles: [team]
  traits: {{team: ['{team}']}}
"""
ATTACKERS = {"star": "*", "regex": "^.*$", "glob": "c*", "dotstar": ".*"}


@pytest.fixture(scope="module")
def lm(module_clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory
       ) -> LimenCluster:
    repo: Path = tmp_path_factory.mktemp("access")
    write(repo, "roles/team.yaml", ROLE)
    write(repo, "resources/other.yaml", SERVER)
    people = "".join(USER.format(name=name, team=team) for name, team in ATTACKERS.items())
    write(repo, "users/people.yaml", people + USER.format(name="member", team="other"))
    return module_clusters("traits", "--gitops", str(repo))


@pytest.mark.parametrize("name", sorted(ATTACKERS))
def test_a_pattern_trait_is_denied_on_another_teams_server(lm: LimenCluster, name: str) -> None:
    result = lm.lmctl("access", "check", name, "resource/other-box", "--login", "u",
                      check=False)
    assert result.returncode == 1, describe(result)
    assert "allow.node_labels" in result.stdout + result.stderr, describe(result)
    assert "Traceback" not in result.stderr


def test_the_member_of_the_team_is_allowed(lm: LimenCluster) -> None:
    result = lm.lmctl("access", "check", "member", "resource/other-box", "--login", "u")
    assert result.returncode == 0, describe(result)
    assert "team" in result.stdout
    assert_no_traceback(lm)
