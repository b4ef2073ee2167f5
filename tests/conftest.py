"""Fixtures shared by every test package: the Kubernetes API emulator (``kube_api``) and the
database environment (``db_env``: a cluster with a db agent in front of the real PostgreSQL
and MariaDB test servers, ``postgres_server`` / ``mariadb_server``), one per session for the
integration and security tests alike; and a garbage collection as each module ends.

In CI (``CI`` set, as ``.ci/run`` runs) a skipped test fails the run: every test that needs
a server or a tool starts or gets it (``scripts/test`` installs them), so a skip there means
something is missing, never something to pass over silently."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dbservers import (  # noqa: F401  (session fixtures)
    MariaDBServer,
    PostgresServer,
    mariadb_server,
    postgres_server,
)
from integration.db_env import DBEnv, start_db_env
from k8s_emulator.fixtures import kube_api, kube_api_rbac  # noqa: F401  (the emulator fixtures)
from k8s_emulator.loop_garbage import collect_dead_loop_garbage


@pytest.fixture(scope="session")
def db_env(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,  # noqa: F811
           mariadb_server: MariaDBServer) -> Iterator[DBEnv]:  # noqa: F811
    yield from start_db_env(tmp_path_factory.mktemp("dbenv"), postgres_server, mariadb_server)


@pytest.fixture(scope="module", autouse=True)
def _garbage_of_this_module() -> Iterator[None]:
    """Collect garbage as each test module ends, so what it left is reported against it: the
    sockets of event loops its threads closed are dropped (``collect_dead_loop_garbage``), any
    other unclosed resource fails the module's last test instead of a random later one."""
    yield
    leaked = collect_dead_loop_garbage()
    if leaked:
        pytest.fail("this module left unclosed resources:\n  " + "\n  ".join(leaked))


_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") and _skipped and exitstatus == 0:
        print(f"\nCI: {len(_skipped)} test(s) skipped; a skip fails CI:\n  "
              + "\n  ".join(_skipped))
        session.exitstatus = 1
