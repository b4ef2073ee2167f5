"""``lmctl auth rotate`` refuses option combinations that say two things at once before it
calls auth, and ``lmctl status`` prints each rotatable CA's phase (limen.cli.lmctl_rotate)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from limen.cli.lmctl import cli
from limen.cli.lmctl_rotate import rotation_lines


@pytest.mark.parametrize(("args", "message"), [
    (["--type", "user", "--rollback", "--phase", "standby"], "either --rollback or --phase"),
    (["--type", "user", "--grace-period", "24h", "--manual"], "starts an automatic rotation"),
    (["--type", "host", "--grace-period", "24h", "--phase", "init"],
     "starts an automatic rotation"),
    (["--manual"], "--type user|host|db|jwt is required"),
], ids=["rollback-and-phase", "grace-and-manual", "grace-and-phase", "no-type"])
def test_contradictions_are_refused_before_calling_auth(args: list[str],
                                                        message: str) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", "/nonexistent", "auth", "rotate", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_every_ca_type_can_be_chosen_and_auth_says_why_tls_does_not_rotate() -> None:
    result = CliRunner().invoke(cli, ["auth", "rotate", "--help"])
    assert "[user|host|db|jwt|tls]" in result.output  # tls: refused by auth with the reason


def test_status_lines() -> None:
    assert rotation_lines({
        "user": {"phase": "standby", "mode": "manual"},
        "host": {"phase": "update_clients", "mode": "auto",
                 "phase_started": "2026-01-01T00:00:00+00:00"},
    }) == ["CA host rotation: update_clients (auto, since 2026-01-01T00:00:00+00:00)",
           "CA user rotation: standby"]
