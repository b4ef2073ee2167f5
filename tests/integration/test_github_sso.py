"""Single sign-on through GitHub at auth, against the GitHub OAuth + REST emulator
(``tests/github_emulator``): the login and every attack, each refused and audited as
``user.login`` (method github) with its reason, and no token, code, state or secret in any
event.

Auth runs in process (``AuthService``, memory backend, the audit events in memory); the codes
come from the emulator's own login form (``follow_to_callback``), the access token from its
token endpoint, the person and the teams (two pages of them) from its REST API.

    replayed state     a finished login's state and code sent again         unknown_state
    another's code     the code of one login sent with another's state      token_exchange_failed
    unmapped team      bob's teams are in an organization mapped to nothing  no_roles
    a local user       GitHub's login is a local user's name                local_user_exists
    crafted login      /user answers a login with '/', '..', NUL, newline   bad_username
    emulator errors    the token endpoint, /user or /user/teams fail        token_exchange_failed,
                                                                            provider_error
    the wrong kind     a GitHub login's state finished as an OIDC login     wrong_kind
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import pytest_asyncio

from github_emulator.emulator import (
    CLIENT_ID,
    CLIENT_SECRET,
    GitHubEmulator,
    Person,
    Team,
    follow_to_callback,
)
from limen.api.loader import load_text
from limen.api.resources import Origin
from limen.api.validation import validate
from limen.auth.auth_service import AuthService
from limen.auth.sso.errors import SSOFailure
from limen.auth.sso.github import GitHubLogins
from limen.auth.sso.oidc import OIDCLogins
from limen.auth.sso.pending import pkce_challenge
from limen.backend.memory import MemoryBackend
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.config import ClusterSettings, Listeners, Settings
from limen.events.emitter import MemoryEmitter
from limen.trust.secrets import SecretSource

MANY_TEAMS = tuple(Team("acme", f"team-{n:03d}") for n in range(140))
PEOPLE = [
    Person("alice", (*MANY_TEAMS, Team("acme", "ops"), Team("Other", "x")), "Alice A.",
           "alice@acme.example"),
    Person("bob", (Team("elsewhere", "ops"),)),
    Person("Carol", (Team("acme", "ops"),)),
    Person("slash", (Team("acme", "ops"),), answers_login="root/../admin"),
    Person("dots", (Team("acme", "ops"),), answers_login=".."),
    Person("nul", (Team("acme", "ops"),), answers_login="eve\x00root"),
    Person("newline", (Team("acme", "ops"),), answers_login="eve\nroot"),
    Person("dash", (Team("acme", "ops"),), answers_login="-eve"),
]
DOCUMENTS = f"""
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: gh-ops}}
spec:
  allow:
    logins: ['{{{{external.logins}}}}']
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: gh-all}}
spec:
  allow:
    logins: [viewer]
---
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {{name: carol}}
spec:
  roles: [gh-all]
---
apiVersion: limen.dev/v1alpha1
kind: GitHubConnector
metadata: {{name: github}}
spec:
  client_id: {CLIENT_ID}
  client_secret_ref: {{file: github.secret}}
  endpoint_url: ENDPOINT
  api_endpoint_url: API
  max_session_ttl: 2h
  teams_to_roles:
  - {{organization: ACME, team: ops, roles: [gh-ops]}}
  - {{organization: acme, team: '*', roles: [gh-all]}}
"""


@pytest.fixture(scope="module")
def github() -> Iterator[GitHubEmulator]:
    with GitHubEmulator(PEOPLE) as emulator:
        yield emulator


class Site:
    def __init__(self, logins: GitHubLogins, emitter: MemoryEmitter, github: GitHubEmulator,
                 browser: aiohttp.ClientSession) -> None:
        self.logins, self.emitter, self.github, self.browser = logins, emitter, github, browser
        self.public_key = public_key_to_openssh(generate_private_key().public_key())

    async def start(self) -> str:
        started = await self.logins.start("github", public_key=self.public_key, port=43210)
        assert started["redirect_uri"] == "http://127.0.0.1:43210/callback"
        return str(started["auth_url"])

    async def sign_in(self, login: str) -> str:
        """A new login, signed in at the emulator as ``login``: the loopback redirect URL."""
        return await follow_to_callback(self.browser, await self.start(), login)

    async def finish(self, loopback_url: str) -> Any:
        query = parse_qs(urlsplit(loopback_url).query)
        return await self.logins.finish(query["state"][0], code=query["code"][0])

    async def refused(self, loopback_url: str, reason: str) -> dict[str, Any]:
        """Finish, expect the refusal ``reason``, return its audit event's fields."""
        with pytest.raises(SSOFailure) as refused:
            await self.finish(loopback_url)
        assert refused.value.reason == reason, refused.value
        [event] = [e for e in self.emitter.events
                   if e.type.value == "user.login" and not e.success]
        assert event.fields["method"] == "github"
        assert event.fields["connector"] == ("" if reason == "unknown_state" else "github")
        assert event.fields["reason"] == reason
        assert event.fields["stage"] == "finish"
        self.no_secrets(event.to_dict(), loopback_url)
        return dict(event.fields)

    def no_secrets(self, event: Mapping[str, Any], loopback_url: str) -> None:
        text = json.dumps(event)
        query = parse_qs(urlsplit(loopback_url).query)
        for secret in (CLIENT_SECRET, query["code"][0], query["state"][0],
                       *self.github.state.tokens):
            assert secret not in text


@pytest_asyncio.fixture
async def site(tmp_path: Path, github: GitHubEmulator) -> AsyncIterator[Site]:
    settings = Settings(data_dir=tmp_path / "data", cluster=ClusterSettings(name="unit"),
                        listeners=Listeners(auth="127.0.0.1:0"))
    settings.data_dir.mkdir(mode=0o700)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "github.secret").write_text(CLIENT_SECRET + "\n")
    (secrets / "github.secret").chmod(0o600)
    github.state.failing.clear()
    emitter = MemoryEmitter()
    service = AuthService(settings, MemoryBackend(), emitter)
    await service.start()
    logins = GitHubLogins(service.server, SecretSource(secrets).resolve)
    documents = DOCUMENTS.replace("ENDPOINT", github.endpoint_url).replace(
        "API", github.api_endpoint_url)
    try:
        async with aiohttp.ClientSession() as browser:
            await service.server.apply(validate(load_text(documents, "t")), Origin.API,
                                       actor="test")
            await emitter.wait_for(lambda e: e.type.value == "github_connector.created",
                                   timeout=5)
            emitter.clear()
            yield Site(logins, emitter, github, browser)
    finally:
        await logins.close()
        await service.stop()


async def test_the_authorization_url_carries_state_and_pkce(site: Site) -> None:
    url = urlsplit(await site.start())
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == \
        f"{site.github.endpoint_url}/login/oauth/authorize"
    assert query["client_id"] == CLIENT_ID
    assert query["redirect_uri"] == "http://127.0.0.1:43210/callback"
    assert query["code_challenge_method"] == "S256"
    assert len(query["state"]) >= 43
    assert len(query["code_challenge"]) == 43
    assert "nonce" not in query  # GitHub's OAuth has none


async def test_a_login_maps_teams_to_roles_and_traits(site: Site) -> None:
    auth_url = await site.start()
    loopback = await follow_to_callback(site.browser, auth_url, "alice")
    result = await site.finish(loopback)
    identity = result.certs.identity
    assert identity.username == "alice"
    assert identity.roles == ("gh-ops", "gh-all")
    assert set(identity.logins) == {"alice", "viewer"}
    teams = identity.traits["github_teams"]
    assert len(teams) == 142  # two pages of /user/teams (100 a page)
    assert "acme/ops" in teams
    assert "Other/x" in teams
    assert identity.traits["logins"] == identity.traits["username"] == ("alice",)
    assert identity.traits["email"] == ("alice@acme.example",)
    assert result.certs.ttl.total_seconds() <= 2 * 3600
    [exchange] = site.github.state.exchanges[-1:]
    assert exchange["redirect_uri"] == "http://127.0.0.1:43210/callback"
    assert pkce_challenge(exchange["code_verifier"]) == \
        parse_qs(urlsplit(auth_url).query)["code_challenge"][0]
    [event] = [e for e in site.emitter.events if e.type.value == "user.login"]
    assert event.success
    assert (event.user, event.fields["method"], event.fields["connector"],
            event.fields["roles"]) == ("alice", "github", "github", ["gh-ops", "gh-all"])
    site.no_secrets(event.to_dict(), loopback)


async def test_a_replayed_state_is_refused(site: Site) -> None:
    loopback = await site.sign_in("alice")
    await site.finish(loopback)
    site.emitter.clear()
    await site.refused(loopback, "unknown_state")


async def test_a_code_for_another_state_is_refused(site: Site) -> None:
    first = parse_qs(urlsplit(await site.sign_in("alice")).query)
    second = parse_qs(urlsplit(await site.sign_in("alice")).query)
    crossed = f"http://127.0.0.1:43210/callback?code={first['code'][0]}" \
              f"&state={second['state'][0]}"
    fields = await site.refused(crossed, "token_exchange_failed")
    assert "bad_verification_code" in fields["error"]


async def test_a_team_not_mapped_is_refused(site: Site) -> None:
    fields = await site.refused(await site.sign_in("bob"), "no_roles")
    assert "maps none of your GitHub teams" in fields["error"]


async def test_a_login_that_is_a_local_user_is_refused(site: Site) -> None:
    fields = await site.refused(await site.sign_in("Carol"), "local_user_exists")
    assert "'carol' is a local user" in fields["error"]


@pytest.mark.parametrize("sign_in", ["slash", "dots", "nul", "newline", "dash"])
async def test_a_crafted_login_is_refused(site: Site, sign_in: str) -> None:
    await site.refused(await site.sign_in(sign_in), "bad_username")


@pytest.mark.parametrize(("failing", "reason"), [
    ("access_token", "token_exchange_failed"),
    ("access_token_text", "provider_error"),
    ("user", "provider_error"),
    ("teams", "provider_error"),
])
async def test_an_emulator_answering_an_error_is_refused(site: Site, failing: str,
                                                         reason: str) -> None:
    loopback = await site.sign_in("alice")
    site.github.state.failing.add(failing)
    fields = await site.refused(loopback, reason)
    assert "HTTP 500" in fields["error"] or "not JSON" in fields["error"]


async def test_a_github_state_is_not_an_oidc_login(site: Site) -> None:
    loopback = await site.sign_in("alice")
    query = parse_qs(urlsplit(loopback).query)
    oidc = OIDCLogins(site.logins.auth, None)
    try:
        with pytest.raises(SSOFailure) as refused:
            await oidc.finish(query["state"][0], code=query["code"][0])
    finally:
        await oidc.close()
    assert refused.value.reason == "wrong_kind"
    [event] = [e for e in site.emitter.events if e.type.value == "user.login"]
    assert (event.success, event.fields["method"], event.fields["reason"]) == (
        False, "oidc", "wrong_kind")
    site.no_secrets(event.to_dict(), loopback)
