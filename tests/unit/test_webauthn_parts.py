"""The parts of the WebAuthn second factor alone: the relying party's checks with a policy
requiring user verification, stored keys, challenge purposes, malformed answers and lmsh's
software key file (limen.auth.credentials.webauthn*, limen.client.webauthn_softkey)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fido2.client import DefaultClientDataCollector, Fido2Client
from fido2.webauthn import PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions

from limen.auth.credentials.login import LocalCredentials
from limen.auth.credentials.webauthn import (
    WebAuthnCredential,
    WebAuthnRefused,
    authentication_options,
    challenge_of,
    check_key_name,
    registration_options,
    relying_party,
    verify_assertion,
    verify_registration,
)
from limen.auth.credentials.webauthn_challenges import WebAuthnChallenges
from limen.backend.memory import MemoryBackend
from limen.client.webauthn_softkey import SoftwareKey
from limen.errors import AccessDenied, BadParameter

PROXY = "limen.example.test:3080"
NOW = 1_800_000_000.0


def client(key: Path) -> Fido2Client:
    return Fido2Client(SoftwareKey(key), DefaultClientDataCollector(f"https://{PROXY}"))


def registered(key: Path) -> WebAuthnCredential:
    rp = relying_party(PROXY, "unit")
    options = registration_options(rp, "alice", (), b"r" * 32)
    answer = dict(client(key).make_credential(
        PublicKeyCredentialCreationOptions.from_dict(options)))
    return verify_registration(rp, answer, b"r" * 32, "soft", NOW)


def assertion(key: Path, keys: tuple[WebAuthnCredential, ...], challenge: bytes) -> Any:
    options = authentication_options(relying_party(PROXY, "unit"), keys, challenge)
    request = PublicKeyCredentialRequestOptions.from_dict(options)
    return dict(client(key).get_assertion(request).get_response(0))


def test_the_relying_party_is_the_proxys_host_and_origin() -> None:
    rp = relying_party(PROXY, "unit")
    assert (rp.rp_id, rp.origin, rp.name) == ("limen.example.test", f"https://{PROXY}", "unit")
    assert not rp.require_user_verification


def test_a_policy_requiring_user_verification_refuses_a_key_without_it(tmp_path: Path) -> None:
    key = registered(tmp_path / "key.json")
    answer = assertion(tmp_path / "key.json", (key,), b"c" * 32)
    strict = relying_party(PROXY, "unit", require_user_verification=True)
    with pytest.raises(WebAuthnRefused) as refused:
        verify_assertion(strict, (key,), answer, b"c" * 32, NOW)
    assert refused.value.reason_internal == "webauthn_uv_required"
    used = verify_assertion(relying_party(PROXY, "unit"), (key,), answer, b"c" * 32, NOW + 1)
    assert used[0].sign_count > key.sign_count
    assert used[0].last_used == NOW + 1


def test_registration_for_another_challenge_is_refused(tmp_path: Path) -> None:
    rp = relying_party(PROXY, "unit")
    options = registration_options(rp, "alice", (), b"r" * 32)
    answer = dict(client(tmp_path / "k.json").make_credential(
        PublicKeyCredentialCreationOptions.from_dict(options)))
    with pytest.raises(WebAuthnRefused) as refused:
        verify_registration(rp, answer, b"x" * 32, "soft", NOW)
    assert refused.value.reason_internal == "webauthn_bad_registration"


def test_stored_keys_round_trip_and_never_show_in_a_repr(tmp_path: Path) -> None:
    key = registered(tmp_path / "key.json")
    creds = LocalCredentials(webauthn=(key,))
    again = LocalCredentials.from_dict(json.loads(json.dumps(creds.to_dict())))
    assert again == creds
    assert again.has_second_factor
    assert key.credential_id not in repr(key)
    assert key.public_key not in repr(creds)
    assert LocalCredentials.from_dict({"password_hash": None}).webauthn == ()
    with pytest.raises(BadParameter, match="sign_count"):
        WebAuthnCredential.from_dict({**key.to_dict(), "sign_count": -1})


@pytest.mark.parametrize(("name", "message"), [
    ("otp", "authenticator app"), ("", "1-64"), ("has space", "1-64"), ("soft", "already"),
])
def test_key_names(name: str, message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        check_key_name(name, ["soft"])
    assert check_key_name("yubi-5.nfc", ["soft"]) == "yubi-5.nfc"


@pytest.mark.parametrize("answer", [
    None, {}, {"response": {}}, {"response": {"clientDataJSON": "!!"}},
    {"response": {"clientDataJSON": "e30"}},  # {} without a challenge
])
def test_malformed_answers_are_refused_before_any_lookup(answer: Any) -> None:
    with pytest.raises(WebAuthnRefused) as refused:
        challenge_of(answer)
    assert refused.value.reason_internal == "webauthn_malformed"


async def test_a_challenge_works_for_its_user_and_purpose_once() -> None:
    clock = [NOW]
    challenges = WebAuthnChallenges(MemoryBackend(), lambda: clock[0])
    registering = await challenges.issue("alice", "register")
    with pytest.raises(WebAuthnRefused) as refused:
        await challenges.spend(registering, "alice", "login")
    assert refused.value.reason_internal == "webauthn_challenge_purpose"
    with pytest.raises(WebAuthnRefused) as refused:
        await challenges.spend(b"\0" * 32, "alice", "login")
    assert refused.value.reason_internal == "webauthn_challenge_unknown"
    login = await challenges.issue("alice", "login")
    await challenges.spend(login, "alice", "login")
    with pytest.raises(WebAuthnRefused) as refused:
        await challenges.spend(login, "alice", "login")
    assert refused.value.reason_internal == "webauthn_challenge_used"


def test_the_software_key_refuses_a_file_others_may_read(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    SoftwareKey(path)
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o640)
    with pytest.raises(AccessDenied, match="mode 0600"):
        SoftwareKey(path)


def test_the_software_key_counts_every_signature(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    key = registered(path)
    first = verify_assertion(relying_party(PROXY, "unit"), (key,),
                             assertion(path, (key,), b"1" * 32), b"1" * 32, NOW)
    second = verify_assertion(relying_party(PROXY, "unit"), first,
                              assertion(path, first, b"2" * 32), b"2" * 32, NOW)
    assert key.sign_count < first[0].sign_count < second[0].sign_count
    assert json.loads(path.read_text())["sign_count"] == second[0].sign_count
