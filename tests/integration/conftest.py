"""Fixtures for the end-to-end tests: real ``limen start`` clusters and ``ssh-agent``.

- ``cluster``: one started cluster for one test (stopped with SIGTERM afterwards; the stop must
  be clean, exit code 0).
- ``clusters``: a factory, ``clusters(name, *extra_args) -> LimenCluster``, for several
  clusters side by side in one test.
- ``module_clusters``: the same factory shared by a test module, for tests that do not
  interfere (build a module-scoped fixture on it).
- ``ssh_agent``: a real ``ssh-agent`` for one test.
- ``db_env`` (in ``tests/conftest.py``): a cluster with a db agent in front of the real
  PostgreSQL and MariaDB test servers (``tests/integration/db_env.py``), one per session.

When a test fails, the output of every cluster it used is attached to its report. The helpers
themselves live in ``tests/integration/cluster.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cluster import ClusterFactory, LimenCluster, SshAgent


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LimenCluster]:
    started = LimenCluster(tmp_path / "cluster").start()
    try:
        yield started
    finally:
        try:
            started.stop()
        finally:
            started.kill()


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[ClusterFactory]:
    factory = ClusterFactory(tmp_path / "clusters")
    yield factory
    factory.close()


@pytest.fixture(scope="module")
def module_clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFactory]:
    factory = ClusterFactory(tmp_path_factory.mktemp("clusters"))
    yield factory
    factory.close()


@pytest.fixture
def ssh_agent() -> Iterator[SshAgent]:
    agent = SshAgent().start()
    yield agent
    agent.stop()


def _clusters_in(value: Any) -> list[LimenCluster]:
    if isinstance(value, LimenCluster):
        return [value]
    if isinstance(value, ClusterFactory):
        return list(value.clusters)
    return []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the daemons' stdout/stderr to the report of a failed test."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    seen: set[int] = set()
    for value in getattr(item, "funcargs", {}).values():
        for found in _clusters_in(value):
            if id(found) not in seen:
                seen.add(id(found))
                report.sections.append((f"limen start ({found.name}, {found.root})",
                                        found.output()))
