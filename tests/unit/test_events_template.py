"""``EventTemplate`` (``limen.events.template``): an event built from a template is the event
``make_event`` builds from the same arguments, and the JSON it carries is byte for byte what
``AuditEvent.to_json`` encodes; whatever is not plain takes make_event's general path (scrubbed,
trimmed), and the pooled uids are random version-4 UUIDs."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.errors import BadParameter
from limen.events import make_event
from limen.events.event import MAX_VALUE_CHARS, AuditEvent
from limen.events.template import EventTemplate, UuidPool

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
SESSION = {"user_cluster": "main", "session_id": "s-1", "server_id": "h-1", "db_service": "pg",
           "db_protocol": "postgres", "db_user": "alice", "db_name": "app",
           "remote_addr": "127.0.0.1:5555"}

names = st.sampled_from(["query", "statement", "parameters", "command", "n", "ok", "password",
                         "note", "rows"])
texts = st.one_of(st.text(max_size=40), st.just(KEY), st.just("q" * (MAX_VALUE_CHARS + 1)))
values = st.one_of(texts, st.booleans(), st.integers(), st.none(),
                   st.lists(st.one_of(texts, st.none()), max_size=4),
                   st.dictionaries(st.text(max_size=5), texts, max_size=2))


def reencoded(event: Any) -> str:
    """The event's JSON as AuditEvent encodes it (a copy without the builder's JSON)."""
    return str(dataclasses.replace(event).to_json())


def same_event(built: Any, expected: Any) -> None:
    """Equal but for the stamp (time, uid), and the JSON it carries is the encoded one."""
    assert dataclasses.replace(built, time=expected.time, uid=expected.uid) == expected
    assert built.to_json() == reencoded(built)


@settings(max_examples=300, deadline=None)
@given(fixed=st.dictionaries(names, texts, max_size=3), extra=st.dictionaries(names, values,
                                                                              max_size=3),
       user=st.one_of(st.none(), st.text(max_size=10)), success=st.booleans())
def test_a_templated_event_is_the_event_make_event_builds(fixed: dict[str, Any],
                                                          extra: dict[str, Any],
                                                          user: str | None,
                                                          success: bool) -> None:
    extra = {k: v for k, v in extra.items() if k not in fixed}
    template = EventTemplate("db.session.query", success=success, cluster="main", user=user,
                             **fixed)
    built = template.make(**extra)
    expected = make_event("db.session.query", success=success, cluster="main", user=user,
                          **fixed, **extra)
    same_event(built, expected)
    assert json.loads(built.to_json()) == {**expected.to_dict(), "time": json.loads(
        built.to_json())["time"], "uid": built.uid}


def test_a_templated_event_sets_every_field_of_an_audit_event() -> None:
    event = EventTemplate("db.session.query", cluster="main", user="alice",
                          **SESSION).make(query="select 1")
    assert set(vars(event)) == {f.name for f in dataclasses.fields(AuditEvent)}
    assert event.rendered == reencoded(event)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.uid = "other"  # type: ignore[misc]


def test_plain_fields_are_written_by_the_template_and_the_rest_by_make_event() -> None:
    template = EventTemplate("db.session.query", cluster="main", user="alice", **SESSION)
    fast = template.make(query="select 1")
    assert fast.rendered is not None
    assert json.loads(fast.to_json())["query"] == "select 1"
    for fields in ({"password": "hunter2"}, {"query": KEY}, {"query": "q" * (MAX_VALUE_CHARS + 1)},
                   {"parameters": ["1", None]}, {"rows": 1.5}):
        slow = template.make(**fields)
        assert slow.rendered is None, fields
        assert slow == dataclasses.replace(
            make_event("db.session.query", cluster="main", user="alice", **SESSION, **fields),
            time=slow.time, uid=slow.uid)
    assert "hunter2" not in template.make(password="hunter2").to_json()


def test_a_fixed_part_that_needs_scrubbing_makes_every_event_the_general_way() -> None:
    template = EventTemplate("db.session.query", cluster="main", user="alice", token="secret")
    event = template.make(query="select 1")
    assert event.rendered is None
    assert "secret" not in event.to_json()
    assert event.fields["scrubbed"] == ["token"]


def test_reserved_and_repeated_fields_are_refused() -> None:
    with pytest.raises(BadParameter, match="reserved"):
        EventTemplate("db.session.query", cluster="main", chain="x")
    with pytest.raises(BadParameter, match="unknown audit event type"):
        EventTemplate("db.no.such", cluster="main")
    template = EventTemplate("db.session.query", cluster="main", **SESSION)
    with pytest.raises(BadParameter, match="reserved"):
        template.make(uid="mine")
    with pytest.raises(BadParameter, match="given twice"):
        template.make(db_user="root")


def test_the_stamp_is_now_to_the_millisecond_in_utc() -> None:
    template = EventTemplate("db.session.query", cluster="main")
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    event = template.make(query="select 1")
    after = datetime.now(UTC)
    assert before <= event.time <= after
    assert event.time.tzinfo is UTC
    assert event.time.microsecond % 1000 == 0
    assert json.loads(event.to_json())["time"] == event.time.strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{event.time.microsecond // 1000:03d}Z"


def test_pooled_uids_are_distinct_random_version_4_uuids() -> None:
    pool = UuidPool()
    uids = [pool.take() for _ in range(1000)]
    assert len(set(uids)) == 1000
    for text in uids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
