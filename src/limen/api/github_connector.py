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
from urllib.parse import urlsplit

from limen.api.durations import parse_duration
from limen.api.loader import FieldPath
from limen.api.oidc_connector import (
    DEFAULT_REDIRECT_URL,
    is_loopback_host,
    web_redirect_problems,
)
from limen.api.resources import Kind, Resource
from limen.errors import BadParameter

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
        if resource.kind is not Kind.GITHUB_CONNECTOR:
            raise BadParameter(f"{resource.key} is not a GitHubConnector")
        spec = resource.spec
        problems = list(github_connector_problems(spec))
        if problems:
            path, reason = problems[0]
            raise BadParameter(f"GitHub connector {resource.name}: "
                               f"{'.'.join(str(p) for p in path)}: {reason}")
        ref = spec.get("client_secret_ref")
        mappings = tuple(
            TeamMapping(str(m["organization"]), str(m["team"]),
                        tuple(str(r) for r in m["roles"]))
            for m in spec.get("teams_to_roles") or [] if isinstance(m, Mapping))
        ttl = spec.get("max_session_ttl")
        return cls(
            name=resource.name,
            client_id=str(spec["client_id"]),
            client_secret_ref={str(k): str(v) for k, v in ref.items()}
            if isinstance(ref, Mapping) else {},
            teams_to_roles=mappings,
            redirect_url=str(spec.get("redirect_url") or DEFAULT_REDIRECT_URL),
            endpoint_url=str(spec.get("endpoint_url") or DEFAULT_ENDPOINT_URL).rstrip("/"),
            api_endpoint_url=str(spec.get("api_endpoint_url")
                                 or DEFAULT_API_ENDPOINT_URL).rstrip("/"),
            max_session_ttl=parse_duration(ttl) if isinstance(ttl, str) and ttl else None,
            display=str(spec.get("display") or resource.name),
            web_redirect_url=str(spec.get("web_redirect_url") or ""),
        )


def github_connector_problems(spec: Mapping[str, Any]) -> Iterator[tuple[FieldPath, str]]:
    """What the schema cannot check: an http endpoint is on a loopback address (anything else
    would let a network attacker answer for GitHub), and ``max_session_ttl`` is a
    duration."""
    for field in ("endpoint_url", "api_endpoint_url"):
        url = spec.get(field)
        if not isinstance(url, str):
            continue
        parts = urlsplit(url)
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            yield ("spec", field), "must be https (http only on a loopback address)"
        elif parts.scheme not in ("http", "https") or not parts.hostname:
            yield ("spec", field), "must be an https URL"
    ttl = spec.get("max_session_ttl")
    if isinstance(ttl, str):
        try:
            parse_duration(ttl)
        except BadParameter as err:
            yield ("spec", "max_session_ttl"), str(err)
    yield from web_redirect_problems(spec, "github")
