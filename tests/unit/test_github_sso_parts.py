"""The pure parts of single sign-on through GitHub and from the web UI: the ``Link`` header's
next page, the GitHub login as a Limen name (crafted logins refused), teams to roles and
traits, a next page on another server refused, the connectors' ``web_redirect_url`` rule, the
redirect a login is sent back to, and the proxy's memory of web logins (once, this browser
and kind only, 5 minutes)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from limen.api.github_connector import TeamMapping
from limen.api.loader import load_text
from limen.api.validation import validate
from limen.auth.sso.errors import SSOFailure
from limen.auth.sso.github_api import GitHubClient, GitHubTeam, GitHubUser, next_link
from limen.auth.sso.github_identity import github_roles, github_traits, github_username
from limen.auth.sso.issue import redirect_uri_for
from limen.errors import BadParameter, ValidationFailed
from limen.proxy.webui.sso_web import LIFETIME_SECONDS, WebLogins, safe_web_path


def test_next_link() -> None:
    header = ('<https://api.github.com/user/teams?page=2>; rel="next", '
              '<https://api.github.com/user/teams?page=5>; rel="last"')
    assert next_link(header) == "https://api.github.com/user/teams?page=2"
    assert next_link('<https://x/1>; rel="prev", <https://x/9>; rel="last"') is None
    assert next_link("") is None


@pytest.mark.parametrize("login", ["octocat", "Octo-Cat", "a", "a1-b2-c3", "x" * 39])
def test_github_logins_name_users(login: str) -> None:
    assert github_username(GitHubUser(login, "", "")) == login.lower()


@pytest.mark.parametrize("login", ["a/b", "..", "../root", "eve\x00", "eve\nroot", "-eve",
                                   "eve-", "e--ve", "x" * 40, "", "eve@corp", "ève"])
def test_crafted_logins_are_refused(login: str) -> None:
    with pytest.raises(SSOFailure) as refused:
        github_username(GitHubUser(login, "", ""))
    assert refused.value.reason == "bad_username"


def test_teams_to_roles_and_traits() -> None:
    mappings = [TeamMapping("ACME", "ops", ("ops",)), TeamMapping("acme", "*", ("viewer",)),
                TeamMapping("other", "ops", ("never",)), TeamMapping("acme", "dev", ("dev",))]
    teams = [GitHubTeam("acme", "ops"), GitHubTeam("Acme", "web"), GitHubTeam("third", "ops")]
    assert github_roles(mappings, teams) == ["ops", "viewer"]
    assert github_roles(mappings, [GitHubTeam("third", "dev")]) == []
    traits = github_traits(GitHubUser("Octo", "Octo Cat", "o@x.example"), teams)
    assert traits == {"github_teams": ["Acme/web", "acme/ops", "third/ops"],
                      "logins": ["Octo"], "username": ["Octo"], "email": ["o@x.example"],
                      "name": ["Octo Cat"]}
    assert "email" not in github_traits(GitHubUser("octo", "", ""), teams)


async def test_a_next_page_on_another_server_is_refused() -> None:
    async def teams(_request: web.Request) -> web.Response:
        return web.json_response([], headers={
            "Link": '<https://evil.example/user/teams?page=2>; rel="next"'})

    app = web.Application()
    app.router.add_get("/api/user/teams", teams)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = GitHubClient()
    try:
        with pytest.raises(SSOFailure) as refused:
            await client.teams(str(server.make_url("/api")), "token")
    finally:
        await client.close()
        await server.close()
    assert "another server" in str(refused.value)


BASE = """
apiVersion: limen.dev/v1alpha1
kind: {kind}
metadata: {{name: c}}
spec:
  client_id: x
  client_secret_ref: {{file: c.secret}}
  web_redirect_url: {url}
"""
MAPPING = {"GitHubConnector": "  teams_to_roles: [{organization: acme, team: ops, roles: [r]}]\n",
           "OIDCConnector": "  issuer_url: https://idp.example\n"
                            "  claims_to_roles: [{claim: g, value: v, roles: [r]}]\n"}


@pytest.mark.parametrize(("kind", "segment"), [("GitHubConnector", "github"),
                                               ("OIDCConnector", "oidc")])
def test_web_redirect_url_is_the_proxys_callback(kind: str, segment: str) -> None:
    def check(url: str) -> Any:
        return validate(load_text(BASE.format(kind=kind, url=url) + MAPPING[kind], "c.yaml"))

    [resource] = check(f"https://proxy.example:3080/v1/webapi/sso/{segment}/web/callback")
    assert resource.spec["web_redirect_url"].endswith("/web/callback")
    other = "oidc" if segment == "github" else "github"
    for bad in (f"http://proxy.example/v1/webapi/sso/{segment}/web/callback",
                "https://proxy.example/elsewhere",
                f"https://proxy.example/v1/webapi/sso/{other}/web/callback",
                f"https://proxy.example/v1/webapi/sso/{segment}/web/callback?x=1"):
        with pytest.raises(ValidationFailed):
            check(bad)


def test_redirect_uri_for_lmsh_and_the_web_ui() -> None:
    assert redirect_uri_for("c", "http://127.0.0.1/callback", "", web=False, port=5000) == \
        "http://127.0.0.1:5000/callback"
    assert redirect_uri_for("c", "http://[::1]/cb", "", web=False, port=5000) == \
        "http://[::1]:5000/cb"
    assert redirect_uri_for("c", "", "https://p/v1/webapi/sso/oidc/web/callback", web=True,
                            port=0) == "https://p/v1/webapi/sso/oidc/web/callback"
    with pytest.raises(SSOFailure) as refused:
        redirect_uri_for("c", "http://127.0.0.1/callback", "", web=True, port=0)
    assert refused.value.reason == "no_web_login"
    with pytest.raises(BadParameter):
        redirect_uri_for("c", "http://127.0.0.1/callback", "", web=False, port=0)


@pytest.mark.parametrize(("value", "expected"), [
    ("/web/audit?x=1", "/web/audit?x=1"), (None, "/web/"), ("https://evil.example/web", "/web/"),
    ("//evil.example/web", "/web/"), ("/web\\..\\x", "/web/"), ("/other", "/web/"),
    ("/web/\nSet-Cookie: x", "/web/"),
])
def test_safe_web_path(value: object, expected: str) -> None:
    assert safe_web_path(value) == expected


def test_web_logins_are_taken_once_by_their_browser_and_kind() -> None:
    now = [1000.0]
    logins = WebLogins(clock=lambda: now[0])

    def keep(state: str) -> None:
        logins.keep(state, kind="github", private_key_pem=b"k", public_key="ssh-ed25519 A",
                    browser="token", redirect="/web/")

    keep("s1")
    assert logins.take("s1", "github", "other-token") is None  # another browser
    assert logins.take("s1", "github", "token") is None  # taken (and dropped) above
    keep("s2")
    assert logins.take("s2", "oidc", "token") is None  # another kind
    keep("s3")
    found = logins.take("s3", "github", "token")
    assert found is not None
    assert found.public_key == "ssh-ed25519 A"
    assert logins.take("s3", "github", "token") is None  # once
    keep("s4")
    now[0] += LIFETIME_SECONDS
    assert logins.take("s4", "github", "token") is None  # expired
