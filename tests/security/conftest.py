"""Fixtures for the security tests: the end-to-end fixtures of ``tests/integration`` (real
``limen start`` clusters, ``ssh-agent``), re-exported, with the same failure reports; the
database environment ``db_env`` comes from ``tests/conftest.py``."""

from __future__ import annotations

from integration.conftest import (  # noqa: F401  (fixtures and the report hook, re-exported)
    cluster,
    clusters,
    module_clusters,
    pytest_runtest_makereport,
    ssh_agent,
)
