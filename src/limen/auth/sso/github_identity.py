"""From what GitHub says about a person to a Limen user: the name, the roles and the traits.

- **name**: the GitHub login, lower-cased (GitHub logins are case-insensitive). It must have
  GitHub's own login form (letters, digits and single inner hyphens, at most 39 characters), so
  an answer crafted with ``/``, ``..``, a NUL or a newline names nobody; a name that is a local
  user's is refused by the caller.
- **roles**: every ``teams_to_roles`` entry whose organization (case-insensitive) and team slug
  (exact, or ``*`` for any team of the organization) is one of the person's teams; none: the
  login is refused.
- **traits** (read in role templates as ``{{external.<name>}}``): ``github_teams``
  (``org/slug`` of every team), ``logins`` and ``username`` (the GitHub login), ``email`` and
  ``name`` when GitHub gives them.

Pure; called by :class:`limen.auth.sso.github.GitHubLogins`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from limen.api.github_connector import TeamMapping
from limen.auth.sso.errors import SSOFailure
from limen.auth.sso.github_api import GitHubTeam, GitHubUser

__all__ = ["github_roles", "github_traits", "github_username"]

_LOGIN = re.compile(r"[A-Za-z0-9](?:-?[A-Za-z0-9]){0,38}")
_MAX_TEAMS = 256


def github_username(user: GitHubUser) -> str:
    """The Limen user name of ``user``; ``SSOFailure`` when the login is not a GitHub login."""
    if not _LOGIN.fullmatch(user.login) or len(user.login) > 39:
        raise SSOFailure("bad_username", "GitHub's answer names a login that is not a valid "
                         "GitHub login (letters, digits and inner hyphens)")
    return user.login.lower()


def github_roles(mappings: Sequence[TeamMapping], teams: Sequence[GitHubTeam]) -> list[str]:
    """The roles ``mappings`` give for ``teams``, in order, without repeats."""
    held = {(t.organization.lower(), t.slug) for t in teams}
    orgs = {org for org, _slug in held}
    roles: dict[str, None] = {}
    for mapping in mappings:
        org = mapping.organization.lower()
        if (mapping.team == "*" and org in orgs) or (org, mapping.team) in held:
            roles.update(dict.fromkeys(mapping.roles))
    return list(roles)


def github_traits(user: GitHubUser, teams: Sequence[GitHubTeam]) -> dict[str, list[str]]:
    """The person's ``external.*`` traits."""
    traits = {
        "github_teams": sorted({f"{t.organization}/{t.slug}" for t in teams})[:_MAX_TEAMS],
        "logins": [user.login],
        "username": [user.login],
    }
    if user.email:
        traits["email"] = [user.email]
    if user.name:
        traits["name"] = [user.name]
    return traits
