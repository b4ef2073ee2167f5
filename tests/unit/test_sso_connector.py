"""The OIDCConnector kind: its documents validate (CRD schema plus ``oidc_connector_problems``)
and read as typed data (``limen.api.oidc_connector``); a literal client secret, an http issuer
off loopback, a redirect off loopback and a connector mapping no role are refused."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from limen.api.loader import load_text
from limen.api.oidc_connector import DEFAULT_REDIRECT_URL, OIDCConnector
from limen.api.resources import Kind, parse_kind
from limen.api.validation import validate
from limen.errors import ValidationFailed

BASE = """
apiVersion: limen.dev/v1alpha1
kind: OIDCConnector
metadata: {name: corp}
spec:
  issuer_url: https://login.example.com/
  client_id: limen
  client_secret_ref: {env: LIMEN_SECRET_CORP_OIDC}
  claims_to_roles:
  - {claim: groups, value: "eng-*", roles: [dev]}
"""


def _validate(text: str) -> Any:
    return validate(load_text(text, "corp.yaml"))


def test_a_connector_reads_with_its_defaults() -> None:
    [resource] = _validate(BASE + "  max_session_ttl: 2h\n")
    connector = OIDCConnector.from_resource(resource)
    assert resource.kind is Kind.OIDC_CONNECTOR
    assert parse_kind("oidcconnectors") is resource.kind
    assert connector.issuer_url == "https://login.example.com"
    assert connector.client_secret_ref == {"env": "LIMEN_SECRET_CORP_OIDC"}
    assert connector.redirect_url == DEFAULT_REDIRECT_URL
    assert connector.scopes == ("email", "profile")
    assert connector.username_claim == "email"
    assert connector.max_session_ttl == timedelta(hours=2)
    assert [(m.claim, m.value, m.roles) for m in connector.claims_to_roles] == [
        ("groups", "eng-*", ("dev",))]


@pytest.mark.parametrize(("change", "where"), [
    ("  client_secret: s3cr3t-value\n", "spec"),
    ("", "spec.issuer_url"),
    ("  redirect_url: https://evil.example/callback\n", "spec.redirect_url"),
    ("  redirect_url: http://127.0.0.1:8080/callback\n", "spec.redirect_url"),
    ("  max_session_ttl: forever\n", "spec.max_session_ttl"),
    ("  scopes: [openid, email]\n", "spec.scopes"),
])
def test_refused_documents(change: str, where: str) -> None:
    text = BASE + change
    if where == "spec.issuer_url":
        text = text.replace("https://login.example.com/", "http://login.example.com")
    with pytest.raises(ValidationFailed) as failed:
        _validate(text)
    assert any(e.path.startswith(where) for e in failed.value.errors), failed.value.errors


def test_a_secret_reference_names_one_place_only() -> None:
    for ref in ("{file: ../etc/shadow}", "{env: HOME}", "{}",
                "{file: a, env: LIMEN_SECRET_A}"):
        with pytest.raises(ValidationFailed):
            _validate(BASE.replace("{env: LIMEN_SECRET_CORP_OIDC}", ref))


def test_a_mapping_needs_roles() -> None:
    with pytest.raises(ValidationFailed):
        _validate(BASE.replace("roles: [dev]", "roles: []"))
    with pytest.raises(ValidationFailed):
        _validate(BASE.split("  claims_to_roles:")[0])
