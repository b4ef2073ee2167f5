"""Attack (or accident): ``kill -9`` right after a big GitOps apply is committed.

The audit events of an apply used to be written after the store transaction: killing
``limen start --gitops`` between the two left thousands of applied objects with no
``role.created`` event and no ``gitops.sync``. This test commits 2,000 roles, watches the
store (its SQLite file, read-only) until the apply is committed, kills the daemon's process
group with SIGKILL at once, restarts it, and finds one ``role.created`` per role and one
``gitops.sync`` for the commit: never missing, never twice.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

from gitops_git import WorkTree
from integration.cluster import ClusterFactory, LimenCluster, wait_for
from limen.backend.sqlite import DB_FILENAME

from .attacks import assert_no_traceback

COUNT = 2000
PER_FILE = 100
ROLE = """\
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {{name: {name}}}
spec: {{allow: {{logins: [u{index}]}}}}
"""
DEADLINE = 180.0


def count(db: Path, prefix: str) -> int:
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        row = connection.execute("SELECT count(*) FROM items WHERE key >= ? AND key < ?",
                                 (prefix, prefix + "\uffff")).fetchone()
    finally:
        connection.close()
    return int(row[0])


def names(lm: LimenCluster) -> Counter[str]:
    return Counter(e["name"] for e in lm.audit("role.created") if e["name"].startswith("bulk"))


def test_a_kill_after_the_commit_loses_no_audit_event(clusters: ClusterFactory,
                                                      tmp_path: Path) -> None:
    work = WorkTree(tmp_path / "access")
    work.write("roles/seed.yaml", ROLE.format(name="seed", index=0))
    work.commit("Seed")
    lm = clusters("crash", "--gitops", str(work.path), "--gitops-interval", "1s")
    db = lm.data_dir / DB_FILENAME

    for start in range(0, COUNT, PER_FILE):
        work.write(f"roles/bulk{start:05d}.yaml", "".join(
            ROLE.format(name=f"bulk{i:05d}", index=i) for i in range(start, start + PER_FILE)))
    sha = work.commit("Two thousand roles")
    wait_for(lambda: count(db, "/resources/Role/bulk") == COUNT, DEADLINE,
             "the big apply to be committed")
    lm.kill()  # SIGKILL, as soon as the commit is seen
    pending = count(db, "/audit/outbox/")

    lm.start()
    created = names(lm)
    assert len(created) == COUNT, f"{len(created)} of {COUNT} (outbox at the kill: {pending})"
    assert set(created.values()) == {1}, [n for n, c in created.items() if c > 1][:5]
    synced = [e for e in lm.audit("gitops.sync") if e.get("sha") == sha and e.get("created")]
    assert [e["created"] for e in synced] == [COUNT]
    assert count(db, "/audit/outbox/") == 0
    assert "Traceback" not in lm.output().split("--- limen start stderr")[-1]
    lm.stop()
    assert_no_traceback(lm)
