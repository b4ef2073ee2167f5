"""AuditEvent: JSON shape, construction rules, and the secret scrubber."""

from __future__ import annotations

import enum
import ipaddress
import json
import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from limen.errors import BadParameter
from limen.events import (
    REDACTED,
    AuditEvent,
    EventType,
    FileLog,
    is_secret_name,
    make_event,
    scan,
    token_fingerprint,
)
from limen.events.event import MAX_VALUE_CHARS

WHEN = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)


def test_json_shape() -> None:
    event = make_event("user.login", user="alice", cluster="main", time=WHEN,
                       method="password", remote_addr="10.0.0.1:5000")
    line = event.to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert list(data) == ["event", "code", "time", "uid", "cluster", "user", "success",
                          "method", "remote_addr"]
    assert data["event"] == "user.login"
    assert data["code"] == "L1000I"
    assert data["time"] == "2026-11-24T10:00:00.123Z"
    assert uuid.UUID(data["uid"]).version == 4
    assert data["cluster"] == "main"
    assert data["user"] == "alice"
    assert data["success"] is True
    assert data["method"] == "password"  # a value, not a secret-named field


def test_time_is_utc_with_milliseconds() -> None:
    plus2 = timezone(timedelta(hours=2))
    event = make_event("exec", time=datetime(2026, 11, 24, 12, 0, 0, 999999, tzinfo=plus2))
    assert event.to_dict()["time"] == "2026-11-24T10:00:00.999Z"
    now = make_event("exec").to_dict()["time"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now)
    with pytest.raises(BadParameter, match="timezone"):
        make_event("exec", time=datetime(2026, 11, 24))


def test_failure_outcome_and_user_omitted() -> None:
    data = make_event("user.login", success=False, reason="bad password").to_dict()
    assert (data["code"], data["success"]) == ("L1000W", False)
    assert "user" not in data
    denied = make_event("access.denied", user="bob").to_dict()
    assert (denied["code"], denied["success"]) == ("L4000W", False)


def test_uids_are_unique() -> None:
    assert len({make_event("exec").uid for _ in range(100)}) == 100


def test_one_line_even_with_newlines_in_values() -> None:
    line = make_event("exec", command="echo a\necho b\r\n").to_json()
    assert "\n" not in line
    assert "\r" not in line
    assert json.loads(line)["command"] == "echo a\necho b\r\n"


def test_round_trip() -> None:
    event = make_event("db.session.query", user="carol", cluster="c", time=WHEN,
                       db_name="app", query="select 1", password="x")
    back = AuditEvent.from_json(event.to_json())
    assert back == event
    assert back.fields["scrubbed"] == ["password"]


def test_events_from_peers_are_scrubbed_again() -> None:
    peer = make_event("exec", time=WHEN, command="ls", password="x").to_dict()
    peer["otp"] = "OTP-FROM-A-BUGGY-AGENT"
    event = AuditEvent.from_dict(peer)
    assert "otp" not in event.fields
    assert event.fields["scrubbed"] == ["password", "otp"]
    assert "OTP-FROM-A-BUGGY-AGENT" not in event.to_json()


def test_rejects_bad_input() -> None:
    with pytest.raises(BadParameter, match="unknown audit event type"):
        make_event("user.loggedin")
    with pytest.raises(BadParameter, match="reserved"):
        make_event("exec", code="L0000I")
    with pytest.raises(BadParameter, match="not JSON data"):
        make_event("exec", payload=b"bytes")
    with pytest.raises(BadParameter, match="finite"):
        make_event("exec", ratio=float("nan"))
    with pytest.raises(BadParameter, match="non-string key"):
        make_event("exec", table={1: "a"})
    with pytest.raises(BadParameter, match="does not mean"):
        AuditEvent.from_dict({**make_event("exec").to_dict(), "success": False})
    with pytest.raises(BadParameter, match="is not a"):
        AuditEvent.from_dict({**make_event("exec").to_dict(), "event": "scp"})
    with pytest.raises(BadParameter, match="lacks"):
        AuditEvent.from_json('{"event": "exec", "code": "L3000I"}')


def test_normalizes_python_values() -> None:
    class Color(enum.Enum):
        RED = "red"

    data = make_event(
        "exec", when=WHEN, color=Color.RED, sid=uuid.UUID(int=1), path=Path("/tmp/x"),
        addr=ipaddress.ip_address("::1"), pair=(1, 2), tags={"b", "a"}, kind=EventType.SCP,
    ).to_dict()
    assert data["when"] == "2026-11-24T10:00:00.123Z"
    assert data["color"] == "red"
    assert data["sid"] == str(uuid.UUID(int=1))
    assert data["path"] == "/tmp/x"
    assert data["addr"] == "::1"
    assert data["pair"] == [1, 2]
    assert data["tags"] == ["a", "b"]
    assert data["kind"] == "scp"


def test_long_values_are_trimmed_and_reported() -> None:
    data = make_event("db.session.query", query="x" * (MAX_VALUE_CHARS + 10),
                      args=["y" * (MAX_VALUE_CHARS + 1)]).to_dict()
    assert len(data["query"]) < MAX_VALUE_CHARS + 20
    assert data["query"].startswith("x" * MAX_VALUE_CHARS)
    assert data["trimmed"] == ["query", "args[0]"]


# --- the scrubber --------------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    "password", "Password", "new_password", "newPassword", "passwd", "passphrase",
    "password_hash", "otp", "otp_code", "totp_secret", "hotp", "secret", "client_secret",
    "token", "join_token", "refreshToken", "access_token", "tokens", "private_key",
    "privateKey", "tls_private_key", "api_key", "apiKey", "credentials", "Authorization",
    "cookie", "set-cookie",
])
def test_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", [
    "user", "login", "method", "token_id", "token_name", "token_hash", "tokenHash", "token_type",
    "token_ttl", "token_secret_ref", "secret_name", "public_key", "key_id", "footprint",
    "command", "session_id", "mfa_device",
])
def test_not_secret_names(name: str) -> None:
    assert not is_secret_name(name)


def _pem_keys() -> dict[str, str]:
    ed = ed25519.Ed25519PrivateKey.generate()
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    enc = serialization.BestAvailableEncryption(b"pw")
    none = serialization.NoEncryption()
    P, F = serialization.PrivateFormat, serialization.Encoding.PEM
    return {
        "pkcs8": ed.private_bytes(F, P.PKCS8, none).decode(),
        "openssh": ed.private_bytes(F, P.OpenSSH, none).decode(),
        "rsa": rs.private_bytes(F, P.TraditionalOpenSSL, none).decode(),
        "encrypted": rs.private_bytes(F, P.PKCS8, enc).decode(),
    }


def test_pem_private_keys_are_redacted_wherever_they_are() -> None:
    keys = _pem_keys()
    event = make_event(
        "exec", command=f"echo '{keys['pkcs8']}' > k", notes=[keys["openssh"]],
        nested={"blob": keys["rsa"], "other": {"x": keys["encrypted"]}},
    )
    data = event.to_dict()
    assert data["command"] == REDACTED
    assert data["notes"] == [REDACTED]
    assert data["nested"] == {"blob": REDACTED, "other": {"x": REDACTED}}
    assert sorted(data["scrubbed"]) == ["command", "nested.blob", "nested.other.x", "notes[0]"]
    assert "PRIVATE KEY" not in event.to_json()


def test_public_material_is_kept() -> None:
    public = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    data = make_event("cert.create", public_key=public).to_dict()
    assert data["public_key"] == public
    assert "scrubbed" not in data


def test_token_fingerprint_is_loggable() -> None:
    token = "abcdef0123456789-join-token"
    fp = token_fingerprint(token)
    assert token not in fp
    assert len(fp) == 16
    data = make_event("join_token.create", token=token, token_hash=fp).to_dict()
    assert data["token_hash"] == fp
    assert "token" not in data
    assert data["scrubbed"] == ["token"]


async def test_secrets_never_reach_the_file(tmp_path: Path) -> None:
    secrets = {
        "password": "hunter2-PASSWORD-7f3a",
        "otp": "OTP-918273",
        "token": "TOKEN-5c0ffee5c0ffee",
        "private_key": "PRIVATE-KEY-MATERIAL-42",
        "secret": "SECRET-VALUE-99",
        "auth_header": "Bearer BEARER-VALUE-77",
    }
    pem = _pem_keys()["pkcs8"]
    log = FileLog(tmp_path / "events", fsync=False)
    try:
        await log.emit(make_event(
            "user.login", success=False, user="alice", time=WHEN,
            password=secrets["password"], otp=secrets["otp"],
            details={"join_token": secrets["token"], "items": [{"secret": secrets["secret"]}]},
            private_key=secrets["private_key"],
            headers={"Authorization": secrets["auth_header"], "Accept": "json"},
            upload=pem, token_name="build-agents",
        ))
    finally:
        log.close()
    raw = (tmp_path / "events" / "2026-11-24.jsonl").read_bytes()
    for value in secrets.values():
        assert value.encode() not in raw
    assert b"PRIVATE KEY" not in raw
    assert pem.splitlines()[1].encode() not in raw
    [event] = scan(tmp_path / "events").events
    assert event["token_name"] == "build-agents"
    assert event["headers"] == {"Accept": "json"}
    assert sorted(event["scrubbed"]) == sorted([
        "password", "otp", "details.join_token", "details.items[0].secret", "private_key",
        "headers.Authorization", "upload",
    ])
