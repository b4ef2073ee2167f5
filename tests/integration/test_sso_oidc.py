"""``lmsh login --auth`` end to end against a running ``limen start`` and the real OpenID
provider (the npm package ``oidc-provider``, ``tests/oidc``), headless: the test reads the URL
lmsh prints, signs in and consents at the provider's pages with an HTTP client, and delivers
the provider's redirect to lmsh's loopback listener, as a browser would. Then ``lmsh status``
shows the mapped role and the ``external`` traits, and ``lmsh ssh`` reaches the node through a
role whose node labels are templated from a claim.

Attacks through the proxy's public API, each refused and audited (``user.login``, method
oidc): the state and code of a finished login sent again (replay), and a user whose claims map
to no role. The token attacks (signature, audience, nonce, expiry) are in
``test_sso_oidc_tokens.py``, where auth runs in process.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from .cluster import ClusterFactory, LimenCluster, LimenUser, command, wait_for
from .sso_oidc_provider import CLIENT_SECRETS, follow_to_loopback, running_provider

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
DOCUMENTS = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: sso-eng}}
spec:
  options: {{max_session_ttl: 4h}}
  allow:
    logins: [{login}]
    node_labels: {{team: '{{{{external.groups}}}}'}}
---
apiVersion: limen.dev/v1alpha1
kind: OIDCConnector
metadata: {{name: corp}}
spec:
  issuer_url: {issuer}
  client_id: limen
  client_secret_ref: {{file: corp-oidc.secret}}
  claims_to_roles:
  - {{claim: groups, value: 'eng-*', roles: [sso-eng]}}
"""


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_provider(tmp_path_factory.mktemp("oidc-e2e")) as url:
        yield url


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory, issuer: str) -> LimenCluster:
    cluster = module_clusters("sso", "--labels", "env=dev,team=eng-dev")
    secrets = cluster.data_dir / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    (secrets / "corp-oidc.secret").write_text(CLIENT_SECRETS["limen"] + "\n")
    (secrets / "corp-oidc.secret").chmod(0o600)
    cluster.lmctl("apply", "-f", "-", input=DOCUMENTS.format(login=LOGIN, issuer=issuer))
    return cluster


class SSOLogin:
    """One ``lmsh login --auth corp --no-browser`` and the redirect the test delivered."""

    def __init__(self, site: LimenCluster, user: LimenUser, login: str) -> None:
        pin = site.status()["ca_fingerprints"]["tls"]
        self.process = subprocess.Popen(
            [command("lmsh"), "login", "--proxy", site.web, "--auth", "corp", "--no-browser",
             "--ca-pin", pin], env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        auth_url = ""
        for line in self.process.stdout:  # lmsh prints the URL, then waits for the redirect
            if line.startswith("http"):
                auth_url = line.strip()
                break
        assert auth_url, self.process.communicate(timeout=10)
        self.loopback = asyncio.run(follow_to_loopback(auth_url, login))
        with urllib.request.urlopen(self.loopback, timeout=10) as page:  # noqa: S310
            assert b"close this window" in page.read()
        self.stdout, self.stderr = self.process.communicate(timeout=30)

    @property
    def ok(self) -> bool:
        return self.process.returncode == 0


def _callback(site: LimenCluster, body: dict[str, str]) -> tuple[int, str]:
    """POST the proxy's public callback as an attacker with no lmsh would."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://{site.web}/v1/webapi/sso/oidc/callback", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def _failures(site: LimenCluster, reason: str) -> list[dict[str, object]]:
    return [e for e in site.audit("user.login")
            if e.get("method") == "oidc" and e.get("reason") == reason]


def test_lmsh_login_auth_maps_claims_and_reaches_the_node(site: LimenCluster) -> None:
    alice = site.user("alice-sso")
    login = SSOLogin(site, alice, "alice")
    assert login.ok, login.stderr
    status = alice.status()
    assert status["user"] == "alice@example.com"
    assert status["roles"] == ["sso-eng"]
    assert status["logins"] == [LOGIN]
    traits = status["traits"]  # the claims, read by roles as external.NAME
    assert traits["groups"] == ["eng-dev", "staff"]
    assert traits["email"] == ["alice@example.com"]
    assert traits["sub"] == ["alice"]
    assert "nonce" not in traits
    text = alice.lmsh("status").stdout
    assert "Traits:       email=alice@example.com; " in text
    assert "groups=eng-dev,staff" in text
    event = wait_for(lambda: [e for e in site.audit("user.login", user="alice@example.com")
                              if e.get("success", True)], 10, "the login's audit event")[-1]
    assert event["method"] == "oidc"
    assert event["connector"] == "corp"
    assert event["roles"] == ["sso-eng"]
    query = parse_qs(urlsplit(login.loopback).query)
    assert query["code"][0] not in json.dumps(event)

    def reached() -> bool:
        result = alice.lmsh("ssh", f"{LOGIN}@{HOST}", "echo via-sso", check=False)
        return result.returncode == 0 and "via-sso" in result.stdout

    wait_for(reached, 20, "lmsh ssh through the SSO role")


def test_a_replayed_state_and_code_are_refused(site: LimenCluster) -> None:
    alice = site.user("alice-replay")
    login = SSOLogin(site, alice, "alice")
    assert login.ok, login.stderr
    query = parse_qs(urlsplit(login.loopback).query)
    status, body = _callback(site, {"state": query["state"][0], "code": query["code"][0]})
    assert status == 403, body
    assert "already used" in body
    wait_for(lambda: _failures(site, "unknown_state"), 10, "the replay's audit event")


def test_claims_mapping_to_no_role_are_refused(site: LimenCluster) -> None:
    bob = site.user("bob-sso")
    login = SSOLogin(site, bob, "bob")
    assert not login.ok
    assert "maps none of your claims to a role" in login.stderr
    [event] = wait_for(lambda: _failures(site, "no_roles"), 10, "the refusal's audit event")
    assert event["connector"] == "corp"
    assert event["success"] is False


def test_auth_takes_no_user_or_password(site: LimenCluster) -> None:
    result = site.user("carl-sso").lmsh("login", "--proxy", site.web, "--auth", "corp",
                                        "--user", "carl", check=False)
    assert result.returncode != 0
    assert "the identity provider says who you are" in result.stderr
