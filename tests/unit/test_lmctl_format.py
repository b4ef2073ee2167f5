"""lmctl's listing rows: users' status, masked tokens, nodes' address or tunnel, audit
sessions; and emit_documents' List for listings."""

from __future__ import annotations

import json

import pytest

from limen.cli.common import emit_documents
from limen.cli.lmctl_format import (
    audit_rows,
    labels_text,
    mask_token,
    node_rows,
    token_rows,
    user_rows,
    user_status,
)


def test_user_status_says_signed_up_pending_and_locked() -> None:
    assert user_status({"signed_up": False}) == "pending sign-up"
    assert user_status({"signed_up": True, "locked": False}) == "signed up"
    assert user_status({"signed_up": True, "locked": True, "locked_until": 0.0}) == \
        "signed up, locked"
    locked = user_status({"signed_up": True, "locked": True, "locked_until": 86400.0 + 3661})
    assert locked == "signed up, locked until 1970-01-02 01:01:01 UTC"


def test_user_rows_join_roles_and_logins() -> None:
    rows = user_rows([{"name": "me", "roles": ["dev", "ops"], "logins": [], "origin": "git",
                       "signed_up": True}])
    assert rows == [("me", "dev,ops", "-", "git", "signed up")]


def test_token_is_masked_but_for_its_hint() -> None:
    assert mask_token("3f9a1c") == "3f9a1c**********"
    assert mask_token(None) == "(hidden)"
    rows = token_rows([
        {"id": "ab" * 16, "hint": "3f9a1c", "type": "node", "single_use": False,
         "expires": "2030-01-02T03:04:05+00:00", "labels": {"env": "dev", "a": "b"}},
        {"id": "cd" * 16, "hint": None, "type": "trusted_cluster", "single_use": True,
         "expires": "", "labels": {}},
    ])
    assert rows[0] == ("3f9a1c**********", "ab" * 16, "node", "2030-01-02 03:04:05 UTC",
                       "reusable", "a=b,env=dev")
    assert rows[1][3:] == ("-", "single use", "-")


def test_node_address_or_tunnel() -> None:
    rows = node_rows([
        {"hostname": "web1", "host_id": "h1", "address": "", "tunnel": True, "labels": {}},
        {"hostname": "web2", "host_id": "h2", "address": "10.0.0.2:22", "tunnel": False,
         "labels": {"env": "dev"}},
    ])
    assert rows == [("web1", "h1", "(tunnel)", "-"), ("web2", "h2", "10.0.0.2:22", "env=dev")]


def test_audit_rows_show_the_session_id_in_the_order_given() -> None:
    rows = audit_rows([
        {"time": "t2", "event": "session.end", "code": "L2001I", "user": "me",
         "session_id": "5f0c", "success": True},
        {"time": "t1", "event": "role.created", "code": "L7000I", "success": True},
    ])
    assert [r[0] for r in rows] == ["t2", "t1"]
    assert rows[0][4] == "5f0c"
    assert rows[1][3:5] == ("-", "-")


def test_labels_text_is_sorted() -> None:
    assert labels_text({"b": 1, "a": "x"}) == "a=x,b=1"
    assert labels_text({}) == "-"


@pytest.mark.parametrize("count", [0, 1, 2])
def test_listings_are_a_list_in_json_whatever_their_length(
        count: int, capsys: pytest.CaptureFixture[str]) -> None:
    emit_documents([{"name": str(i)} for i in range(count)], "json", as_list=True)
    payload = json.loads(capsys.readouterr().out)
    assert payload["kind"] == "List"
    assert [item["name"] for item in payload["items"]] == [str(i) for i in range(count)]
