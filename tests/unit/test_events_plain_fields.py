"""``make_event``'s one-pass path for plain fields (``limen.events.event._plain_fields``) gives
exactly what the general path (normalise, then scrub) gives, and steps aside for anything it
does not handle: secret names, private keys, long strings, nested data, other types."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.events import make_event
from limen.events.event import MAX_VALUE_CHARS, _normalize, _plain_fields
from limen.events.scrub import scrub

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"


class Color(enum.StrEnum):
    RED = "red"


def general(fields: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    trimmed: list[str] = []
    plain = {k: _normalize(v, k, trimmed) for k, v in fields.items()}
    clean, scrubbed = scrub(plain)
    return clean, scrubbed, trimmed


names = st.sampled_from(["cert_type", "logins", "expires", "token", "password", "token_id",
                         "session_id", "reason", "n", "ok", "apiKey", "note"])
texts = st.one_of(st.text(max_size=30), st.just(KEY), st.just("x" * (MAX_VALUE_CHARS + 1)))
values = st.one_of(texts, st.booleans(), st.integers(), st.none(), st.floats(allow_nan=False),
                   st.lists(texts, max_size=4), st.lists(st.integers(), max_size=2),
                   st.dictionaries(st.text(max_size=5), texts, max_size=2))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.dictionaries(names, values, max_size=6))
def test_the_plain_path_agrees_with_the_general_one(fields: dict[str, Any]) -> None:
    fast = _plain_fields(fields)
    if fast is not None:
        assert (fast, [], []) == general(fields)


@pytest.mark.parametrize("fields", [
    {"password": "hunter2"},
    {"query": KEY},
    {"logins": ["a", KEY]},
    {"command": "x" * (MAX_VALUE_CHARS + 1)},
    {"spec": {"token": "t"}},
    {"color": Color.RED},
    {"ratio": 0.5},
    {"when": datetime(2026, 1, 1, tzinfo=UTC)},
    {"ids": ("a", "b")},
])
def test_anything_else_takes_the_general_path(fields: dict[str, Any]) -> None:
    assert _plain_fields(fields) is None


def test_cert_create_takes_the_plain_path_and_copies_lists() -> None:
    logins = ["alice", "ubuntu"]
    fields = {"cert_type": "user", "logins": logins, "expires": "2026-12-07T10:00:00+00:00"}
    assert _plain_fields(fields) == fields
    event = make_event("cert.create", user="alice", **fields)
    logins.append("root")  # the caller's list changes later: the event does not
    assert event.fields["logins"] == ["alice", "ubuntu"]
    assert "scrubbed" not in event.fields


def test_a_secret_still_scrubbed_next_to_plain_fields() -> None:
    event = make_event("user.login", user="alice", method="password", password="hunter2")
    assert "password" not in event.fields
    assert event.fields["scrubbed"] == ["password"]
