"""The ``GitHubConnector`` kind read as typed data: GitHub (or GitHub Enterprise) as the place
Limen's users log in with, their team memberships giving their roles.

Declared like every public kind (Git, ``lmctl apply``, a Kubernetes CR); its schema is
``crds/limen.dev_githubconnectors.yaml``. :meth:`GitHubConnector.from_resource` reads a
validated resource, :func:`github_connector_problems` adds what the schema cannot say (the
endpoints are https unless on a loopback address, ``max_session_ttl`` parses,
``web_redirect_url`` is the proxy's web callback). The client secret
is only a reference (``client_secret_ref``, the rule of ``limen.api.secret_refs``), as for
``OIDCConnector``. Called by ``limen.api.validation`` and the auth side of single sign-on
(``limen.auth.sso.github``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from limen.api.loader import FieldPath
from limen.api.oidc_connector import (
    DEFAULT_REDIRECT_URL,
    checked_spec,
    endpoint_problems,
    secret_ref_of,
    session_ttl_of,
    session_ttl_problems,
    web_redirect_problems,
)
from limen.api.resources import Kind, Resource

__all__ = [
    "DEFAULT_API_ENDPOINT_URL",
    "DEFAULT_ENDPOINT_URL",
    "GitHubConnector",
    "TeamMapping",
    "github_connector_problems",
]

DEFAULT_ENDPOINT_URL = "https://github.com"
"""Where people log in (``/login/oauth/authorize``) and codes are exchanged."""
DEFAULT_API_ENDPOINT_URL = "https://api.github.com"
"""GitHub's REST API (``/user``, ``/user/teams``)."""


@dataclass(frozen=True)
class TeamMapping:
    """``teams_to_roles`` entry: members of ``organization``/``team`` (the team's slug, or
    ``*`` for every team of the organization) get ``roles``."""

    organization: str
    team: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class GitHubConnector:
    """One connector as auth uses it; ``client_secret_ref`` is the reference, never the
    secret."""

    name: str
    client_id: str
    client_secret_ref: Mapping[str, str]
    teams_to_roles: tuple[TeamMapping, ...]
    redirect_url: str = DEFAULT_REDIRECT_URL
    endpoint_url: str = DEFAULT_ENDPOINT_URL
    api_endpoint_url: str = DEFAULT_API_ENDPOINT_URL
    max_session_ttl: timedelta | None = None
    display: str = ""
    web_redirect_url: str = ""
    """The proxy's web callback registered with the OAuth app; empty: no web UI login."""

    @classmethod
    def from_resource(cls, resource: Resource) -> GitHubConnector:
        spec = checked_spec(resource, Kind.GITHUB_CONNECTOR, "GitHub connector",
                            github_connector_problems)
        mappings = tuple(
            TeamMapping(str(m["organization"]), str(m["team"]),
                        tuple(str(r) for r in m["roles"]))
            for m in spec.get("teams_to_roles") or [] if isinstance(m, Mapping))
        return cls(
            name=resource.name,
            client_id=str(spec["client_id"]),
            client_secret_ref=secret_ref_of(spec),
            teams_to_roles=mappings,
            redirect_url=str(spec.get("redirect_url") or DEFAULT_REDIRECT_URL),
            endpoint_url=str(spec.get("endpoint_url") or DEFAULT_ENDPOINT_URL).rstrip("/"),
            api_endpoint_url=str(spec.get("api_endpoint_url")
                                 or DEFAULT_API_ENDPOINT_URL).rstrip("/"),
            max_session_ttl=session_ttl_of(spec),
            display=str(spec.get("display") or resource.name),
            web_redirect_url=str(spec.get("web_redirect_url") or ""),
        )


def github_connector_problems(spec: Mapping[str, Any]) -> Iterator[tuple[FieldPath, str]]:
    """What the schema cannot check: an http endpoint is on a loopback address (anything else
    would let a network attacker answer for GitHub), and ``max_session_ttl`` is a
    duration."""
    yield from endpoint_problems(spec, "endpoint_url")
    yield from endpoint_problems(spec, "api_endpoint_url")
    yield from session_ttl_problems(spec)
    yield from web_redirect_problems(spec, "github")
