"""One-time sign-up tokens and sign-up links (limen.auth.credentials.signup_tokens)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from limen.auth.credentials.signup_tokens import (
    MAX_SIGNUP_TOKEN_TTL,
    SignupLink,
    SignupToken,
    build_signup_url,
    check_signup_token,
    mark_used,
    new_signup_token,
    parse_signup_url,
    signup_token_id,
)
from limen.errors import AccessDenied, BadParameter

NOW = 1_714_572_000.0
PIN = "sha256:" + "ab" * 32


def test_new_token_secret_is_32_random_bytes_and_only_its_hash_is_stored() -> None:
    secret, record = new_signup_token("alice", now=NOW)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)  # 32 bytes, urlsafe base64, no padding
    assert record.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert record.token_hash == signup_token_id(secret)
    assert (record.user, record.created, record.expires, record.used) == (
        "alice", NOW, NOW + 3600, False,
    )
    stored = json.dumps(record.to_dict())
    assert secret not in stored
    assert new_signup_token("alice", now=NOW)[0] != secret


def test_right_secret_before_expiry_passes() -> None:
    secret, record = new_signup_token("alice", now=NOW, ttl=600)
    check_signup_token(record, secret, NOW)
    check_signup_token(record, secret, NOW + 599.9)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong secret", "invalid sign-up link"),
        ("hash as secret", "invalid sign-up link"),
        ("empty", "invalid sign-up link"),
        ("expired", "sign-up link has expired"),
        ("long expired", "sign-up link has expired"),
        ("used", "sign-up link was already used"),
        ("used and expired", "sign-up link was already used"),
    ],
)
def test_refusals(case: str, message: str) -> None:
    secret, record = new_signup_token("alice", now=NOW, ttl=600)
    now = NOW
    presented: Any = secret
    if case == "wrong secret":
        presented = new_signup_token("alice", now=NOW)[0]
    elif case == "hash as secret":
        presented = record.token_hash  # what a backend dump shows is not usable
    elif case == "empty":
        presented = ""
    if "expired" in case:
        now = NOW + 600 if case != "long expired" else NOW + 86400
    if "used" in case:
        record = mark_used(record)
    with pytest.raises(AccessDenied) as err:
        check_signup_token(record, presented, now)
    assert str(err.value) == message


def test_single_use_survives_a_round_trip_through_storage() -> None:
    secret, record = new_signup_token("alice", now=NOW)
    check_signup_token(record, secret, NOW + 1)
    stored = json.loads(json.dumps(mark_used(record).to_dict()))
    with pytest.raises(AccessDenied, match="already used"):
        check_signup_token(SignupToken.from_dict(stored), secret, NOW + 2)


def test_record_dict_round_trip() -> None:
    _, record = new_signup_token("alice", now=NOW, ttl=7200)
    assert SignupToken.from_dict(json.loads(json.dumps(record.to_dict()))) == record


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"token_hash": "nothex"}, "token_hash"),
        ({"user": ""}, "user"),
        ({"expires": "soon"}, "expires"),
        ({"created": True}, "created"),
        ({"used": "no"}, "used"),
    ],
)
def test_record_from_dict_rejects_malformed_fields(change: dict[str, Any], field: str) -> None:
    _, record = new_signup_token("alice", now=NOW)
    with pytest.raises(BadParameter, match=field):
        SignupToken.from_dict({**record.to_dict(), **change})


@pytest.mark.parametrize("ttl", [0, -1, MAX_SIGNUP_TOKEN_TTL + 1, float("nan"), float("inf")])
def test_ttl_bounds(ttl: float) -> None:
    with pytest.raises(BadParameter, match="lifetime"):
        new_signup_token("alice", now=NOW, ttl=ttl)


def test_user_is_required() -> None:
    with pytest.raises(BadParameter):
        new_signup_token("", now=NOW)


@pytest.mark.parametrize(
    ("proxy", "pin"),
    [
        ("proxy.example.com:3080", PIN),
        ("proxy.example.com", PIN),
        ("127.0.0.1:3080", None),
        ("[::1]:3080", PIN),
    ],
)
def test_url_round_trip(proxy: str, pin: str | None) -> None:
    secret, _ = new_signup_token("alice", now=NOW)
    url = build_signup_url(proxy, secret, pin)
    expected = f"https://{proxy}/web/signup/{secret}" + (f"?ca_pin={pin}" if pin else "")
    assert url == expected
    assert parse_signup_url(url) == SignupLink(proxy=proxy, token=secret, ca_pin=pin)


def test_pin_is_normalised_to_lower_case() -> None:
    secret, _ = new_signup_token("alice", now=NOW)
    url = build_signup_url("p:3080", secret, PIN.upper().replace("SHA256", "sha256"))
    assert parse_signup_url(url).ca_pin == PIN


@pytest.mark.parametrize(
    "url",
    [
        "http://p:3080/web/signup/{t}?ca_pin=" + PIN,
        "https://p:3080/web/invite/{t}",
        "https://p:3080/web/signup/{t}/extra",
        "https://p:3080/web/signup/short",
        "https:///web/signup/{t}",
        "https://user@p:3080/web/signup/{t}",
        "https://p:99999/web/signup/{t}",
        "https://p:3080/web/signup/{t}?ca_pin=sha256:abc",
        "https://p:3080/web/signup/{t}?ca_pin=md5:" + "ab" * 32,
        "https://p:3080/web/signup/{t}?ca_pin=" + PIN + "&ca_pin=" + PIN,
    ],
)
def test_parse_rejects_malformed_links(url: str) -> None:
    secret, _ = new_signup_token("alice", now=NOW)
    with pytest.raises(BadParameter):
        parse_signup_url(url.format(t=secret))


@pytest.mark.parametrize(
    ("proxy", "token", "pin"),
    [
        ("", "t" * 43, None),
        ("p:3080/x", "t" * 43, None),
        ("p:port", "t" * 43, None),
        ("p:3080", "t" * 42, None),
        ("p:3080", "t/" * 21 + "t", None),
        ("p:3080", "t" * 43, "sha256:xyz"),
    ],
)
def test_build_rejects_bad_parts(proxy: str, token: str, pin: str | None) -> None:
    with pytest.raises(BadParameter):
        build_signup_url(proxy, token, pin)


def test_reprs_hold_no_secret_or_hash() -> None:
    secret, record = new_signup_token("alice", now=NOW)
    link = parse_signup_url(build_signup_url("p:3080", secret, PIN))
    for text in (repr(record), str(record), repr(link), str(link)):
        assert secret not in text
        assert record.token_hash not in text
    assert "alice" in repr(record)
