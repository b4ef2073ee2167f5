"""WebAuthn as a second factor, in process: the auth server (limen.auth.core with
limen.auth.credentials.webauthn*) against lmsh's software security key driven by the fido2
client (limen.client.webauthn_softkey), and each attack refused with its audit event."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.webauthn import PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions

from limen.api.loader import load_path
from limen.api.resources import Origin
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.auth.credentials.otp import totp_code
from limen.auth.credentials.webauthn import WebAuthnRefused
from limen.auth.credentials.webauthn_challenges import CHALLENGE_TTL
from limen.auth.credentials.webauthn_keys import UserKeys
from limen.backend.memory import MemoryBackend
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.client.webauthn_softkey import SoftwareKey
from limen.config import ClusterSettings
from limen.errors import AccessDenied, NotFound
from limen.events.emitter import MemoryEmitter

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"
PROXY = "proxy.example.test:3080"
ORIGIN = f"https://{PROXY}"
PASSWORD = "correct horse battery staple"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Env:
    def __init__(self, auth: AuthServer, emitter: MemoryEmitter, clock: Clock,
                 tmp: Path) -> None:
        self.auth, self.emitter, self.clock, self.tmp = auth, emitter, clock, tmp
        self.public_key = public_key_to_openssh(generate_private_key().public_key(), "t")

    def key(self, name: str = "key") -> Path:
        return self.tmp / f"{name}.json"

    def client(self, key: Path, origin: str = ORIGIN) -> Fido2Client:
        collector = DefaultClientDataCollector(origin, verify=lambda _rp, _origin: True)
        return Fido2Client(SoftwareKey(key), collector)

    async def signup_with_key(self, user: str, key: Path) -> None:
        link = await self.auth.invite(user, actor="test")
        secret = link.split("/web/signup/")[1].split("?")[0]
        begun = await self.auth.signup_begin(secret, PASSWORD, mfa="webauthn")
        options = PublicKeyCredentialCreationOptions.from_dict(begun["webauthn"])
        answer = dict(self.client(key).make_credential(options))
        await self.auth.signup(secret, PASSWORD, None, answer, "yubikey")

    async def begin(self, user: str) -> dict[str, Any]:
        options: dict[str, Any] = (await self.auth.webauthn_login_begin(user, PASSWORD))[
            "webauthn"]
        return options

    def answer(self, key: Path, options: dict[str, Any], origin: str = ORIGIN) -> dict[str, Any]:
        request = PublicKeyCredentialRequestOptions.from_dict(options)
        return dict(self.client(key, origin).get_assertion(request).get_response(0))

    async def login(self, user: str, answer: dict[str, Any]) -> Any:
        return await self.auth.login(user, PASSWORD, None, self.public_key,
                                     timedelta(hours=1), webauthn=answer)

    def events(self, event_type: str, **fields: Any) -> list[dict[str, Any]]:
        found = []
        for event in self.emitter.events:
            data = event.to_dict()
            if data["event"] == event_type and all(data.get(k) == v for k, v in fields.items()):
                found.append(data)
        return found

    async def refused(self, user: str, answer: dict[str, Any], reason: str) -> None:
        with pytest.raises(AccessDenied, match="invalid password or security key"):
            await self.login(user, answer)
        assert self.events("user.login", user=user, success=False, reason=reason,
                           second_factor="webauthn"), reason


@pytest.fixture
async def env(tmp_path: Path) -> Env:
    clock, emitter = Clock(), MemoryEmitter()
    auth = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), emitter, clock=clock)
    await auth.start()
    await auth.apply(validate(load_path(EXAMPLES)), Origin.GIT, actor="test")
    await auth.set_proxy_address(PROXY)
    for user in ("wa-alice", "wa-bob"):
        await auth.add_user(user, ["dev"], [], actor="test")
    return Env(auth, emitter, clock, tmp_path)


async def test_signup_with_a_key_then_login_with_it(env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())
    assert env.events("user.signup", user="wa-alice", second_factor="webauthn")
    assert env.events("mfa.add", user="wa-alice", name="yubikey", type="webauthn")
    result = await env.login("wa-alice", env.answer(env.key(), await env.begin("wa-alice")))
    assert result.certs.identity.username == "wa-alice"
    assert env.events("user.login", user="wa-alice", second_factor="webauthn", success=True)
    again = await env.login("wa-alice", env.answer(env.key(), await env.begin("wa-alice")))
    assert again.certs.identity.username == "wa-alice"
    stored = (await env.auth.backend.get("/secrets/credentials/wa-alice"))
    assert stored is not None
    key = json.loads(stored.value)["webauthn"][0]
    audit = json.dumps([e.to_dict() for e in env.emitter.events], default=str)
    assert key["credential_id"] not in audit
    assert key["public_key"] not in audit


async def test_a_replayed_assertion_is_refused(env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())
    answer = env.answer(env.key(), await env.begin("wa-alice"))
    await env.login("wa-alice", answer)
    await env.refused("wa-alice", answer, "webauthn_challenge_used")


async def test_an_assertion_for_another_users_challenge_is_refused(env: Env) -> None:
    shared = env.key("shared")  # one key registered by both users
    await env.signup_with_key("wa-alice", shared)
    await env.signup_with_key("wa-bob", shared)
    bobs = env.answer(shared, await env.begin("wa-bob"))
    await env.refused("wa-alice", bobs, "webauthn_challenge_other_user")


async def test_a_wrong_origin_is_refused(env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())
    phished = env.answer(env.key(), await env.begin("wa-alice"), origin="https://evil.test")
    await env.refused("wa-alice", phished, "webauthn_origin")


async def test_a_wrong_rp_id_is_refused(env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())
    options = await env.begin("wa-alice")
    key = SoftwareKey(env.key())
    state = key._load()
    state["credentials"][0]["rp_id"] = "evil.test"  # the key signs for another site
    key._save(state)
    answer = env.answer(env.key(), {**options, "rpId": "evil.test"})
    await env.refused("wa-alice", answer, "webauthn_origin")


async def test_a_cloned_key_with_a_lower_counter_is_refused(env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())
    clone = env.key("clone")
    shutil.copy(env.key(), clone)
    await env.login("wa-alice", env.answer(env.key(), await env.begin("wa-alice")))
    await env.login("wa-alice", env.answer(env.key(), await env.begin("wa-alice")))
    await env.refused("wa-alice", env.answer(clone, await env.begin("wa-alice")),
                      "webauthn_counter")


async def test_a_challenge_past_its_expiry_is_refused(env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())
    options = await env.begin("wa-alice")
    env.clock.now += CHALLENGE_TTL + 1
    await env.refused("wa-alice", env.answer(env.key(), options), "webauthn_challenge_expired")


async def test_wrong_password_at_the_first_step_counts_and_is_audited(env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())
    with pytest.raises(AccessDenied, match="invalid password or security key"):
        await env.auth.webauthn_login_begin("wa-alice", "wrong password!")
    assert env.events("user.login", user="wa-alice", success=False, reason="bad_password")
    with pytest.raises(AccessDenied, match="invalid password or security key"):
        await env.auth.webauthn_login_begin("nobody", PASSWORD)


async def test_a_user_with_totp_only_gets_no_challenge(env: Env) -> None:
    link = await env.auth.invite("wa-bob", actor="test")
    secret = link.split("/web/signup/")[1].split("?")[0]
    totp = (await env.auth.signup_begin(secret, PASSWORD))["totp_secret"]
    await env.auth.signup(secret, PASSWORD, totp_code(totp, env.clock.now))
    with pytest.raises(NotFound, match="no security key"):
        await env.auth.webauthn_login_begin("wa-bob", PASSWORD)


async def test_keys_of_a_logged_in_user_add_list_remove(env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())
    keys = UserKeys(env.auth.backend, env.clock, env.auth.users.challenges)
    rp = await env.auth.webauthn_rp()

    async def proof(key: Path) -> dict[str, Any]:
        confirm = await keys.confirm_begin("wa-alice", rp)
        assert confirm["otp"] is False
        return {"webauthn": env.answer(key, confirm["webauthn"])}

    options = await keys.register_begin("wa-alice", "backup", rp)
    answer = dict(env.client(env.key("backup")).make_credential(
        PublicKeyCredentialCreationOptions.from_dict(options)))
    await keys.register("wa-alice", "backup", answer, rp, await proof(env.key()))
    assert [k["name"] for k in await keys.list("wa-alice")] == ["yubikey", "backup"]
    with pytest.raises(AccessDenied, match="already used"):
        await keys.register("wa-alice", "backup2", answer, rp)  # the challenge was spent
    await keys.remove("wa-alice", "yubikey", rp, required=True,
                      proof=await proof(env.key("backup")))
    with pytest.raises(AccessDenied, match="last second factor"):
        await keys.remove("wa-alice", "backup", rp, required=True,
                          proof=await proof(env.key("backup")))
    assert [k["name"] for k in await keys.list("wa-alice")] == ["backup"]
    await env.login("wa-alice", env.answer(env.key("backup"), await env.begin("wa-alice")))


async def test_a_certificate_alone_cannot_change_second_factors(env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())
    keys = UserKeys(env.auth.backend, env.clock, env.auth.users.challenges)
    rp = await env.auth.webauthn_rp()
    options = await keys.register_begin("wa-alice", "thief", rp)
    answer = dict(env.client(env.key("thief")).make_credential(
        PublicKeyCredentialCreationOptions.from_dict(options)))
    with pytest.raises(WebAuthnRefused) as refused:
        await keys.register("wa-alice", "thief", answer, rp)
    assert refused.value.reason_internal == "proof_missing"
    with pytest.raises(WebAuthnRefused) as refused:
        await keys.remove("wa-alice", "yubikey", rp, required=False, proof={"otp": "123456"})
    assert refused.value.reason_internal == "proof_missing"  # she has no app: no code proves
    confirm = await keys.confirm_begin("wa-alice", rp)
    proven = {"webauthn": env.answer(env.key(), confirm["webauthn"])}
    await keys.remove("wa-alice", "yubikey", rp, required=False, proof=proven)
    assert await keys.list("wa-alice") == []


async def test_a_totp_user_proves_with_the_current_code(env: Env) -> None:
    link = await env.auth.invite("wa-bob", actor="test")
    secret = link.split("/web/signup/")[1].split("?")[0]
    totp = (await env.auth.signup_begin(secret, PASSWORD))["totp_secret"]
    await env.auth.signup(secret, PASSWORD, totp_code(totp, env.clock.now - 30))
    keys = UserKeys(env.auth.backend, env.clock, env.auth.users.challenges)
    rp = await env.auth.webauthn_rp()
    options = await keys.register_begin("wa-bob", "key", rp)
    answer = dict(env.client(env.key()).make_credential(
        PublicKeyCredentialCreationOptions.from_dict(options)))
    with pytest.raises(WebAuthnRefused) as refused:
        await keys.register("wa-bob", "key", answer, rp, {"otp": "000000"})
    assert refused.value.reason_internal == "proof_bad_otp"
    options = await keys.register_begin("wa-bob", "key", rp)
    answer = dict(env.client(env.key()).make_credential(
        PublicKeyCredentialCreationOptions.from_dict(options)))
    await keys.register("wa-bob", "key", answer, rp, {"otp": totp_code(totp, env.clock.now)})
    assert [k["type"] for k in await keys.list("wa-bob")] == ["totp", "webauthn"]


async def test_a_cluster_requiring_user_verification_refuses_a_key_without_it(
        env: Env) -> None:
    await env.signup_with_key("wa-alice", env.key())  # registered while it was preferred
    strict = AuthServer(env.auth.backend,
                        ClusterSettings(name="unit", webauthn_user_verification="required"),
                        env.emitter, clock=env.clock)
    await strict.start()
    options = (await strict.webauthn_login_begin("wa-alice", PASSWORD))["webauthn"]
    assert options["userVerification"] == "required"
    # a client that ignores the policy, with a key that verifies nobody
    answer = env.answer(env.key(), {**options, "userVerification": "discouraged"})
    with pytest.raises(AccessDenied, match="invalid password or security key"):
        await strict.login("wa-alice", PASSWORD, None, env.public_key, None, webauthn=answer)
    assert env.events("user.login", user="wa-alice", success=False,
                      reason="webauthn_uv_required")

