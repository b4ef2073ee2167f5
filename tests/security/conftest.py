"""Fixtures for the security tests: the end-to-end fixtures of ``tests/integration`` (real
``limen start`` clusters, ``ssh-agent``, the database environment ``db_env`` with the
PostgreSQL and MariaDB servers it builds on), re-exported, with the same failure reports."""

from __future__ import annotations

from integration.conftest import (  # noqa: F401  (fixtures and the report hook, re-exported)
    cluster,
    clusters,
    db_env,
    mariadb_server,
    module_clusters,
    postgres_server,
    pytest_runtest_makereport,
    ssh_agent,
)
