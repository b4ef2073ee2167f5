"""``lmsh login --auth NAME`` through a GitHubConnector, end to end against a running ``limen
start`` and the GitHub OAuth + REST emulator (``tests/github_emulator``), headless: the test
reads the URL lmsh prints, signs in at the emulator's login form with an HTTP client, and
delivers the redirect to lmsh's loopback listener, as a browser would. lmsh finds the
connector's kind in the proxy's listing (``GET /v1/webapi/sso/connectors``, which names no
secret). Then ``lmsh status`` shows the user (the GitHub login), the role its team gives and
the ``external`` traits, and ``lmsh ssh`` reaches the node through that role.

Attacks through the proxy's public API, each refused and audited (``user.login``, method
github): a finished login's state and code sent again, and a person whose teams map to no role.
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
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from github_emulator.emulator import (
    CLIENT_ID,
    CLIENT_SECRET,
    GitHubEmulator,
    Person,
    Team,
    follow_to_callback,
)

from .cluster import ClusterFactory, LimenCluster, LimenUser, command, wait_for

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
DOCUMENTS = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: gh-ops}}
spec:
  options: {{max_session_ttl: 4h}}
  allow:
    logins: [{login}]
    node_labels: {{env: dev}}
---
apiVersion: limen.dev/v1alpha1
kind: GitHubConnector
metadata: {{name: github}}
spec:
  display: GitHub
  client_id: {client_id}
  client_secret_ref: {{file: github.secret}}
  endpoint_url: {endpoint}
  api_endpoint_url: {api}
  teams_to_roles:
  - {{organization: acme, team: ops, roles: [gh-ops]}}
"""
PEOPLE = [Person("octo-cat", (Team("acme", "ops"), Team("acme", "web")), "Octo Cat",
                 "octo@acme.example"),
          Person("mallory", (Team("evil", "ops"),))]


@pytest.fixture(scope="module")
def github() -> Iterator[GitHubEmulator]:
    with GitHubEmulator(PEOPLE) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory, github: GitHubEmulator) -> LimenCluster:
    cluster = module_clusters("ghsso", "--labels", "env=dev")
    secrets = cluster.data_dir / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    (secrets / "github.secret").write_text(CLIENT_SECRET + "\n")
    (secrets / "github.secret").chmod(0o600)
    cluster.lmctl("apply", "-f", "-", input=DOCUMENTS.format(
        login=LOGIN, client_id=CLIENT_ID, endpoint=github.endpoint_url,
        api=github.api_endpoint_url))
    return cluster


async def _sign_in(auth_url: str, login: str) -> str:
    async with aiohttp.ClientSession() as browser:
        return await follow_to_callback(browser, auth_url, login)


class GitHubLogin:
    """One ``lmsh login --auth github --no-browser`` and the redirect the test delivered."""

    def __init__(self, site: LimenCluster, user: LimenUser, login: str) -> None:
        pin = site.status()["ca_fingerprints"]["tls"]
        self.process = subprocess.Popen(
            [command("lmsh"), "login", "--proxy", site.web, "--auth", "github", "--no-browser",
             "--ca-pin", pin], env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        auth_url = ""
        for line in self.process.stdout:  # lmsh prints the URL, then waits for the redirect
            if line.startswith("http"):
                auth_url = line.strip()
                break
        assert auth_url, self.process.communicate(timeout=10)
        self.loopback = asyncio.run(_sign_in(auth_url, login))
        with urllib.request.urlopen(self.loopback, timeout=10) as page:  # noqa: S310
            assert b"close this window" in page.read()
        self.stdout, self.stderr = self.process.communicate(timeout=30)

    @property
    def ok(self) -> bool:
        return self.process.returncode == 0


def _public(site: LimenCluster, method: str, path: str,
            body: dict[str, str] | None = None) -> tuple[int, Any]:
    """Call the proxy's public API as someone with no lmsh would."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://{site.web}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()


def _failures(site: LimenCluster, reason: str) -> list[dict[str, Any]]:
    return [e for e in site.audit("user.login")
            if e.get("method") == "github" and e.get("reason") == reason]


def test_the_proxy_lists_the_connectors_and_nothing_secret(site: LimenCluster) -> None:
    status, listing = _public(site, "GET", "/v1/webapi/sso/connectors")
    assert status == 200, listing
    assert [i for i in listing["items"] if i["name"] == "github"] == [
        {"name": "github", "kind": "github", "display": "GitHub", "web": False}]
    assert CLIENT_ID not in json.dumps(listing)
    assert "secret" not in json.dumps(listing)


def test_lmsh_login_auth_github_maps_teams_and_reaches_the_node(site: LimenCluster) -> None:
    octo = site.user("octo-gh")
    login = GitHubLogin(site, octo, "octo-cat")
    assert login.ok, login.stderr
    status = octo.status()
    assert status["user"] == "octo-cat"
    assert status["roles"] == ["gh-ops"]
    assert status["logins"] == [LOGIN]
    traits = status["traits"]
    assert traits["github_teams"] == ["acme/ops", "acme/web"]
    assert traits["logins"] == traits["username"] == ["octo-cat"]
    assert traits["email"] == ["octo@acme.example"]
    event = wait_for(lambda: [e for e in site.audit("user.login", user="octo-cat")
                              if e.get("success", True)], 10, "the login's audit event")[-1]
    assert (event["method"], event["connector"], event["roles"]) == ("github", "github",
                                                                     ["gh-ops"])
    query = parse_qs(urlsplit(login.loopback).query)
    assert query["code"][0] not in json.dumps(event)

    def reached() -> bool:
        result = octo.lmsh("ssh", f"{LOGIN}@{HOST}", "echo via-github", check=False)
        return result.returncode == 0 and "via-github" in result.stdout

    wait_for(reached, 20, "lmsh ssh through the GitHub role")


def test_a_replayed_state_and_code_are_refused(site: LimenCluster) -> None:
    octo = site.user("octo-replay")
    login = GitHubLogin(site, octo, "octo-cat")
    assert login.ok, login.stderr
    query = parse_qs(urlsplit(login.loopback).query)
    status, body = _public(site, "POST", "/v1/webapi/sso/github/callback",
                           {"state": query["state"][0], "code": query["code"][0]})
    assert status == 403, body
    assert "already used" in body
    wait_for(lambda: _failures(site, "unknown_state"), 10, "the replay's audit event")


def test_teams_mapping_to_no_role_are_refused(site: LimenCluster) -> None:
    login = GitHubLogin(site, site.user("mallory-gh"), "mallory")
    assert not login.ok
    assert "maps none of your GitHub teams to a role" in login.stderr
    [event] = wait_for(lambda: _failures(site, "no_roles"), 10, "the refusal's audit event")
    assert (event["connector"], event["success"], event["user"]) == ("github", False,
                                                                     "mallory")


def test_an_unknown_connector_name_is_refused_before_any_redirect(site: LimenCluster) -> None:
    result = site.user("nobody-gh").lmsh("login", "--proxy", site.web, "--auth", "gitlab",
                                         "--insecure", check=False)
    assert result.returncode != 0
    assert "no single sign-on connector 'gitlab'" in result.stderr


def test_a_connector_without_web_redirect_is_not_for_the_web_ui(site: LimenCluster) -> None:
    status, body = _public(site, "POST", "/v1/webapi/sso/github/github/web", {})
    assert status == 403, body
    assert "no web_redirect_url" in body
    [event] = wait_for(lambda: _failures(site, "no_web_login"), 10, "the refusal's event")
    assert (event["stage"], event["connector"]) == ("start", "github")


TWINS = """
apiVersion: limen.dev/v1alpha1
kind: OIDCConnector
metadata: {name: twin}
spec:
  issuer_url: https://idp.example.com
  client_id: limen
  client_secret_ref: {file: twin.secret}
  claims_to_roles: [{claim: groups, value: ops, roles: [gh-ops]}]
---
apiVersion: limen.dev/v1alpha1
kind: GitHubConnector
metadata: {name: twin}
spec:
  client_id: Iv1.twin
  client_secret_ref: {file: twin.secret}
  teams_to_roles: [{organization: acme, team: ops, roles: [gh-ops]}]
"""


def test_a_name_of_both_kinds_is_refused_as_ambiguous(site: LimenCluster) -> None:
    site.lmctl("apply", "-f", "-", input=TWINS)
    result = site.user("twin-gh").lmsh("login", "--proxy", site.web, "--auth", "twin",
                                       "--insecure", check=False)
    assert result.returncode != 0
    assert "names both an OIDC and a GitHub connector" in result.stderr
