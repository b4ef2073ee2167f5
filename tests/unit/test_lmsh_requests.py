"""``lmsh request`` without a cluster: the table, the flag rules, and which saved profile
``lmsh login --request-id`` may reuse instead of asking for a password."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from limen.cli.lmsh import cli
from limen.cli.lmsh_requests import _rows, logged_in_profile
from limen.client.profile import Profile, ProfileStore


def test_rows_show_reviewers_and_dashes() -> None:
    item = {"id": "0b5c", "user": "alice", "roles": ["db-admin", "ops"], "state": "APPROVED",
            "expires": "2026-12-06T19:01:40.123456+00:00", "reason": "",
            "reviews": [{"author": "bob"}]}
    assert _rows([item]) == [["0b5c", "alice", "db-admin,ops", "APPROVED",
                              "2026-12-06T19:01:40", "bob", "-"]]


def test_review_needs_exactly_one_verdict() -> None:
    runner = CliRunner()
    both = runner.invoke(cli, ["request", "review", "x", "--approve", "--deny"])
    assert both.exit_code == 2
    assert "exactly one of --approve and --deny" in both.output
    assert runner.invoke(cli, ["request", "review", "x"]).exit_code == 2


def _save(store: ProfileStore, user: str, expires: datetime) -> None:
    profile = Profile(proxy="p:3080", user=user, cluster="c", expires=expires.isoformat())
    store.save_login(profile, private_key=b"k", public_key=b"p", ssh_cert=b"s", tls_cert=b"t",
                     tls_cas={}, host_ca_lines=[])


def test_only_a_valid_profile_of_the_same_user_is_reused(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    assert logged_in_profile(store, "p:3080", "alice") is None
    _save(store, "alice", datetime.now(UTC) + timedelta(hours=1))
    saved = logged_in_profile(store, "p:3080", "alice")
    assert saved is not None
    assert saved.user == "alice"
    assert logged_in_profile(store, "p:3080", "bob") is None
    _save(store, "alice", datetime.now(UTC) - timedelta(seconds=1))
    assert logged_in_profile(store, "p:3080", "alice") is None
