"""Single sign-on at auth against the real ``oidc-provider``: the login and every attack on the
tokens, each refused and audited as ``user.login`` (method oidc) with its reason.

Auth runs in process (``AuthService``, memory backend, the audit events in memory) so that a
test can move its clock (an expired ID token) and stand between auth and the provider's token
endpoint, as a network attacker or a compromised relay would (:class:`Tampering` changes the
token answer in transit: a flipped signature, or a genuine token the provider issued to
another client). The codes come from the provider's own login and consent pages
(``follow_to_loopback``); the ID tokens are the provider's, signed with its keys.

    replayed state   a finished login's state and code sent again          unknown_state
    wrong nonce      the authorization URL's nonce rewritten before login  bad_nonce
    tampered token   one byte of the ID token's signature changed          bad_signature
    wrong audience   a genuine ID token issued to client ``other``         bad_audience
    expired token    auth's clock past the token's exp (120 s + leeway)    expired
    no role          bob's claims map to no role                           no_roles
    a local user     the claims name a local user of the cluster           local_user_exists
    flooding starts  more than 20 waiting logins from one address           LimitExceeded
    (and no secret   the client secret's file is gone: refused, not crashed  no_secret)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import pytest_asyncio

from limen.api.loader import load_text
from limen.api.resources import Origin
from limen.api.validation import validate
from limen.auth.auth_service import AuthService
from limen.auth.sso.errors import SSOFailure
from limen.auth.sso.oidc import OIDCLogins
from limen.auth.sso.pending import MAX_PER_ADDRESS, pkce_challenge
from limen.auth.sso.provider import OIDCProviderClient, ProviderMetadata
from limen.backend.memory import MemoryBackend
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.config import ClusterSettings, Listeners, Settings
from limen.errors import LimitExceeded
from limen.events.emitter import MemoryEmitter
from limen.trust.secrets import SecretSource

from .sso_oidc_provider import CLIENT_SECRETS, follow_to_loopback, running_provider

DOCUMENTS = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: sso-dev}}
spec:
  allow:
    logins: ['{{{{email.local(external.email)}}}}']
    node_labels: {{team: '{{{{external.groups}}}}'}}
---
apiVersion: limen.dev/v1alpha1
kind: OIDCConnector
metadata: {{name: corp}}
spec:
  issuer_url: {issuer}
  client_id: limen
  client_secret_ref: {{file: corp-oidc.secret}}
  max_session_ttl: 2h
  claims_to_roles:
  - {{claim: groups, value: 'eng-*', roles: [sso-dev]}}
"""


class Tampering(OIDCProviderClient):
    """The provider client with an attacker on the token endpoint's answer: ``replace``
    changes the ID token in transit (None: passes it on)."""

    def __init__(self) -> None:
        super().__init__()
        self.replace: Any = None

    async def exchange(self, meta: ProviderMetadata, **kwargs: Any) -> Mapping[str, Any]:
        answer = await super().exchange(meta, **kwargs)
        if self.replace is None:
            return answer
        return {**answer, "id_token": self.replace(str(answer["id_token"]))}


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_provider(tmp_path_factory.mktemp("oidc-tokens")) as url:
        yield url


class Site:
    def __init__(self, service: AuthService, logins: OIDCLogins, tampering: Tampering,
                 emitter: MemoryEmitter, secrets: Path) -> None:
        self.service, self.logins, self.tampering, self.emitter = \
            service, logins, tampering, emitter
        self.secrets = secrets
        self.public_key = public_key_to_openssh(generate_private_key().public_key())

    async def start(self) -> str:
        started = await self.logins.start("corp", public_key=self.public_key, port=43210)
        return str(started["auth_url"])

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
        assert event.fields["method"] == "oidc"
        # an unknown state names no connector: nothing of it is kept once used
        assert event.fields["connector"] == ("" if reason == "unknown_state" else "corp")
        assert event.fields["reason"] == reason
        _no_secrets(event.to_dict(), loopback_url)
        return dict(event.fields)


def _no_secrets(event: Mapping[str, Any], loopback_url: str) -> None:
    text = json.dumps(event)
    query = parse_qs(urlsplit(loopback_url).query)
    for secret in (*CLIENT_SECRETS.values(), query["code"][0], query["state"][0], "eyJ"):
        assert secret not in text


@pytest_asyncio.fixture
async def site(tmp_path: Path, issuer: str) -> AsyncIterator[Site]:
    settings = Settings(data_dir=tmp_path / "data", cluster=ClusterSettings(name="unit"),
                        listeners=Listeners(auth="127.0.0.1:0"))
    settings.data_dir.mkdir(mode=0o700)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "corp-oidc.secret").write_text(CLIENT_SECRETS["limen"] + "\n")
    (secrets / "corp-oidc.secret").chmod(0o600)
    emitter = MemoryEmitter()
    service = AuthService(settings, MemoryBackend(), emitter)
    await service.start()
    tampering = Tampering()
    logins = OIDCLogins(service.server, SecretSource(secrets).resolve, tampering)
    try:
        await service.server.apply(validate(load_text(DOCUMENTS.format(issuer=issuer), "t")),
                                   Origin.API, actor="test")
        await emitter.wait_for(lambda e: e.type.value == "oidc_connector.created", timeout=5)
        emitter.clear()
        yield Site(service, logins, tampering, emitter, secrets)
    finally:
        await logins.close()
        await service.stop()


async def test_a_login_maps_claims_to_roles_and_traits(site: Site) -> None:
    result = await site.finish(await follow_to_loopback(await site.start(), "alice"))
    identity = result.certs.identity
    assert identity.username == "alice@example.com"
    assert identity.roles == ("sso-dev",)
    assert identity.logins == ("alice",)
    assert identity.traits["groups"] == ("eng-dev", "staff")
    assert "nonce" not in identity.traits
    assert result.certs.ttl.total_seconds() <= 2 * 3600
    [event] = [e for e in site.emitter.events if e.type.value == "user.login"]
    assert event.success
    assert (event.user, event.fields["method"], event.fields["roles"]) == (
        "alice@example.com", "oidc", ["sso-dev"])


async def test_a_replayed_state_is_refused(site: Site) -> None:
    loopback = await follow_to_loopback(await site.start(), "alice")
    await site.finish(loopback)
    fields = await site.refused(loopback, "unknown_state")
    assert fields["stage"] == "finish"


async def test_a_wrong_nonce_is_refused(site: Site) -> None:
    url = urlsplit(await site.start())
    query = {k: v[0] for k, v in parse_qs(url.query).items()} | {"nonce": "attacker-nonce"}
    rewritten = urlunsplit(url._replace(query=urlencode(query)))
    await site.refused(await follow_to_loopback(rewritten, "alice"), "bad_nonce")


async def test_a_tampered_id_token_is_refused(site: Site) -> None:
    def flip(token: str) -> str:
        head, body, signature = token.split(".")
        changed = ("A" if signature[10] != "A" else "B")
        return f"{head}.{body}.{signature[:10]}{changed}{signature[11:]}"

    site.tampering.replace = flip
    await site.refused(await follow_to_loopback(await site.start(), "alice"), "bad_signature")


async def test_an_id_token_for_another_client_is_refused(site: Site, issuer: str) -> None:
    """The attacker has a genuine ID token the provider issued to client ``other`` for this
    login's nonce (a malicious relying party replaying it), and puts it in the answer."""
    url = urlsplit(await site.start())
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    verifier = "attacker-verifier-0123456789-0123456789-0123456789"
    query |= {"client_id": "other", "code_challenge": pkce_challenge(verifier)}
    other_loopback = await follow_to_loopback(
        urlunsplit(url._replace(query=urlencode(query))), "alice")
    client = OIDCProviderClient()
    try:
        meta = await client.metadata(issuer)
        stolen = await client.exchange(
            meta, client_id="other", client_secret=CLIENT_SECRETS["other"],
            code=parse_qs(urlsplit(other_loopback).query)["code"][0],
            redirect_uri=query["redirect_uri"], code_verifier=verifier)
    finally:
        await client.close()
    site.tampering.replace = lambda _token: str(stolen["id_token"])
    loopback = await follow_to_loopback(await site.start(), "alice")
    await site.refused(loopback, "bad_audience")


async def test_an_expired_id_token_is_refused(site: Site) -> None:
    loopback = await follow_to_loopback(await site.start(), "alice")
    real_clock = site.service.server.clock
    site.service.server.clock = lambda: real_clock() + 200  # exp is 120 s, leeway 30 s
    await site.refused(loopback, "expired")


async def test_claims_mapping_to_no_role_are_refused(site: Site) -> None:
    fields = await site.refused(await follow_to_loopback(await site.start(), "bob"), "no_roles")
    assert "maps none" in fields["error"]
    assert not [e for e in site.emitter.events if e.type.value == "cert.create"]


async def test_an_sso_login_never_acts_as_a_local_user(site: Site) -> None:
    local = ("apiVersion: limen.dev/v1alpha1\nkind: User\nmetadata: {name: alice}\n"
             "spec: {name: alice@example.com, roles: [sso-dev]}\n")
    await site.service.server.apply(validate(load_text(local, "u")), Origin.API, actor="test")
    site.emitter.clear()
    await site.refused(await follow_to_loopback(await site.start(), "alice"),
                       "local_user_exists")


async def test_a_missing_client_secret_is_a_refusal(site: Site) -> None:
    loopback = await follow_to_loopback(await site.start(), "alice")
    (site.secrets / "corp-oidc.secret").unlink()
    fields = await site.refused(loopback, "no_secret")
    assert "secrets" not in fields["error"]  # where auth looks is in its log, not the answer


async def test_starts_flooding_from_one_address_are_refused(site: Site) -> None:
    for _ in range(MAX_PER_ADDRESS):
        await site.logins.start("corp", public_key=site.public_key, port=1,
                                remote_addr="203.0.113.9")
    with pytest.raises(LimitExceeded):
        await site.logins.start("corp", public_key=site.public_key, port=1,
                                remote_addr="203.0.113.9")
    [event] = [e for e in site.emitter.events if e.type.value == "user.login"]
    assert (event.success, event.fields["stage"], event.fields["reason"]) == (
        False, "start", "LimitExceeded")
    assert event.fields["remote_addr"] == "203.0.113.9"
    await site.logins.start("corp", public_key=site.public_key, port=1,
                            remote_addr="203.0.113.10")
