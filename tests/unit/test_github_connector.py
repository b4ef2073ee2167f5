"""The GitHubConnector kind: its documents validate (CRD schema plus
``github_connector_problems``) and read as typed data (``limen.api.github_connector``); a
literal client secret, an http endpoint off loopback, a redirect off loopback, a bad team or
organization name and a connector mapping no role are refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from limen.api.github_connector import (
    DEFAULT_API_ENDPOINT_URL,
    DEFAULT_ENDPOINT_URL,
    GitHubConnector,
)
from limen.api.loader import load_text
from limen.api.oidc_connector import DEFAULT_REDIRECT_URL
from limen.api.resources import PUBLIC_KINDS, Kind, parse_kind
from limen.api.validation import validate
from limen.errors import ValidationFailed

BASE = """
apiVersion: limen.dev/v1alpha1
kind: GitHubConnector
metadata: {name: github}
spec:
  client_id: Iv1.0123456789abcdef
  client_secret_ref: {file: github.secret}
  teams_to_roles:
  - {organization: acme, team: ops, roles: [access, editor]}
"""


def _validate(text: str) -> Any:
    return validate(load_text(text, "github.yaml"))


def test_a_connector_reads_with_its_defaults() -> None:
    [resource] = _validate(BASE + "  max_session_ttl: 2h\n  display: GitHub\n")
    connector = GitHubConnector.from_resource(resource)
    assert resource.kind is Kind.GITHUB_CONNECTOR in PUBLIC_KINDS
    assert parse_kind("githubconnectors") is parse_kind("lmgithub") is resource.kind
    assert connector.client_id == "Iv1.0123456789abcdef"
    assert connector.client_secret_ref == {"file": "github.secret"}
    assert connector.redirect_url == DEFAULT_REDIRECT_URL
    assert connector.endpoint_url == DEFAULT_ENDPOINT_URL
    assert connector.api_endpoint_url == DEFAULT_API_ENDPOINT_URL
    assert connector.max_session_ttl == timedelta(hours=2)
    assert connector.display == "GitHub"
    assert [(m.organization, m.team, m.roles) for m in connector.teams_to_roles] == [
        ("acme", "ops", ("access", "editor"))]


def test_github_enterprise_endpoints() -> None:
    [resource] = _validate(BASE + "  endpoint_url: https://ghe.example.com/\n"
                                  "  api_endpoint_url: https://ghe.example.com/api/v3\n")
    connector = GitHubConnector.from_resource(resource)
    assert connector.endpoint_url == "https://ghe.example.com"
    assert connector.api_endpoint_url == "https://ghe.example.com/api/v3"
    assert connector.display == "github"


@pytest.mark.parametrize(("change", "where"), [
    ("  client_secret: s3cr3t-value\n", "spec"),
    ("  endpoint_url: http://github.example.com\n", "spec.endpoint_url"),
    ("  api_endpoint_url: http://api.github.example.com\n", "spec.api_endpoint_url"),
    ("  api_endpoint_url: ftp://127.0.0.1/api\n", "spec.api_endpoint_url"),
    ("  redirect_url: https://evil.example/callback\n", "spec.redirect_url"),
    ("  redirect_url: http://127.0.0.1:8080/callback\n", "spec.redirect_url"),
    ("  max_session_ttl: forever\n", "spec.max_session_ttl"),
])
def test_refused_documents(change: str, where: str) -> None:
    with pytest.raises(ValidationFailed) as failed:
        _validate(BASE + change)
    assert any(e.path.startswith(where) for e in failed.value.errors), failed.value.errors


def test_an_http_endpoint_on_loopback_is_accepted() -> None:
    [resource] = _validate(BASE + "  endpoint_url: http://127.0.0.1:9000\n"
                                  "  api_endpoint_url: http://127.0.0.1:9000/api\n")
    assert GitHubConnector.from_resource(resource).endpoint_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize("mapping", [
    "{organization: acme, team: ops, roles: []}",
    "{organization: acme, team: ops}",
    "{organization: ../acme, team: ops, roles: [access]}",
    "{organization: acme, team: 'ops/../admins', roles: [access]}",
    "{organization: acme, team: '', roles: [access]}",
])
def test_a_bad_mapping_is_refused(mapping: str) -> None:
    with pytest.raises(ValidationFailed):
        _validate(BASE.replace("{organization: acme, team: ops, roles: [access, editor]}",
                               mapping))


def test_a_connector_maps_teams() -> None:
    with pytest.raises(ValidationFailed):
        _validate(BASE.split("  teams_to_roles:")[0])
