"""Recordings as users see them: metadata read from the sidecars, summary rows, and the
session rule decided per recording (admin, other system identities, access, auditor)."""

from __future__ import annotations

import json
from pathlib import Path

from limen.auth.recordings import decide, list_metadata, read_metadata, summary
from limen.ca.identity import Identity, SystemRole
from limen.cli.lmsh_recordings import format_duration
from limen.rbac.presets import preset_roles
from limen.rbac.roleset import RoleSet


def _store(directory: Path, session_id: str, **meta: object) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{session_id}.cast").write_text('{"version": 2}\n')
    (directory / f"{session_id}.json").write_text(json.dumps(meta))


def _user(name: str, role: str) -> tuple[Identity, RoleSet]:
    roles = [r for r in preset_roles() if r.name == role]
    return Identity(username=name, cluster="c", roles=(role,)), RoleSet.from_roles(roles, {})


def test_metadata_and_summary(tmp_path: Path) -> None:
    _store(tmp_path, "s1", user="ana", login="root", server_hostname="web1",
           start="2026-01-01T10:00:00+00:00", end="2026-01-01T10:01:05.5+00:00")
    _store(tmp_path, "s2", user="bo", participants=["bo", "ana"], server_id="h2",
           start="2026-01-01T11:00:00+00:00", incomplete=True)
    (tmp_path / "not a session.cast").write_text("")
    (tmp_path / "orphan.json").write_text("{}")
    assert read_metadata(tmp_path, "missing") is None
    assert [m["session_id"] for m in list_metadata(tmp_path)] == ["s1", "s2"]
    first = summary(read_metadata(tmp_path, "s1") or {})
    assert (first["user"], first["node"], first["login"], first["duration_seconds"],
            first["participants"]) == ("ana", "web1", "root", 65.5, ["ana"])
    second = summary(read_metadata(tmp_path, "s2") or {})
    assert (second["node"], second["duration_seconds"], second["incomplete"],
            second["participants"]) == ("h2", None, True, ["bo", "ana"])
    assert list_metadata(tmp_path / "nothing-yet") == []


def test_decisions_per_recording(tmp_path: Path) -> None:
    _store(tmp_path, "s1", user="ana")
    _store(tmp_path, "s2", user="bo", participants=["bo", "ana"])
    _store(tmp_path, "s3", user="bo")
    metas = {m["session_id"]: m for m in list_metadata(tmp_path)}
    ana, ana_roles = _user("ana", "access")
    assert [sid for sid, m in metas.items() if decide(ana, ana_roles, "read", m).allowed] == [
        "s1", "s2"]
    assert decide(ana, ana_roles, "list", None).allowed
    auditor, auditor_roles = _user("aud", "auditor")
    assert all(decide(auditor, auditor_roles, "read", m).allowed for m in metas.values())
    editor, editor_roles = _user("ed", "editor")
    refused = decide(editor, editor_roles, "list", None)
    assert not refused.allowed
    assert refused.reason == "no role allows list on session"
    admin = Identity(username="admin", cluster="c", system_role=SystemRole.ADMIN)
    assert decide(admin, None, "read", metas["s3"]).allowed
    node = Identity(username="h1", cluster="c", system_role=SystemRole.NODE)
    assert not decide(node, None, "read", metas["s3"]).allowed


def test_durations_read_like_a_clock() -> None:
    assert [format_duration(s) for s in (None, 0.4, 6, 65.5, 3723)] == [
        "-", "0s", "6s", "1m06s", "1h02m03s"]
