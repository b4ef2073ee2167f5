"""Issuance is audited before it answers: ``AuthServer.issue_for_user`` returns certificates
only once their ``cert.create`` event is fsynced in the real ``FileLog``. The attack: a crash
(here, a failing fsync) between the hand-over of the event to the writer and its fsync must
not leave a caller holding certificates that the audit log may have lost.
"""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.backend.factory import open_backend
from limen.ca.keys import generate_private_key, public_key_to_openssh
from limen.config import ClusterSettings
from limen.events import FileLog, scan
from limen.events import filelog as filelog_module

ROLE = {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "dev"},
        "spec": {"allow": {"logins": ["ubuntu"]}}}
USER = {"apiVersion": "limen.dev/v1alpha1", "kind": "User", "metadata": {"name": "alice"},
        "spec": {"roles": ["dev"]}}


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[tuple[AuthServer, FileLog]]:
    backend = open_backend(tmp_path)
    log = FileLog(tmp_path / "events")
    server = AuthServer(backend, ClusterSettings(name="unit"), log)
    try:
        await server.start()
        await server.apply(validate([SourceDocument("<test>", i, 1, d)
                                     for i, d in enumerate([ROLE, USER])]),
                           Origin.API, actor="admin")
        yield server, log
    finally:
        await log.aclose()
        await backend.close()


def _key() -> str:
    return public_key_to_openssh(generate_private_key().public_key())


async def test_issued_certificates_are_audited_on_disk_when_returned(
    auth: tuple[AuthServer, FileLog], tmp_path: Path
) -> None:
    server, _ = auth
    user = await server.store.get(Kind.USER, "alice")
    await asyncio.gather(*(server.issue_for_user(user, _key(), None) for _ in range(16)))
    created = [e for e in scan(tmp_path / "events").events
               if e["event"] == "cert.create" and e["user"] == "alice"]
    assert len(created) == 16
    assert all(e["success"] for e in created)


async def test_a_crash_before_the_fsync_returns_no_certificates(
    auth: tuple[AuthServer, FileLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = auth
    user = await server.store.get(Kind.USER, "alice")
    written, gate = threading.Event(), threading.Event()

    def crashing_fsync(fd: int) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return
        written.set()  # the cert.create line is written, not yet durable
        assert gate.wait(10)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(filelog_module.os, "fsync", crashing_fsync)
    issues = [asyncio.create_task(server.issue_for_user(user, _key(), None)) for _ in range(4)]
    await asyncio.to_thread(written.wait, 5)
    assert not any(task.done() for task in issues)  # nobody holds certificates yet
    gate.set()
    results = await asyncio.gather(*issues, return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
