"""Fixtures shared by every test package: the Kubernetes API emulator (``kube_api``) and the
database environment (``db_env``: a cluster with a db agent in front of the real PostgreSQL
and MariaDB test servers, ``postgres_server`` / ``mariadb_server``), one per session for the
integration and security tests alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dbservers import (  # noqa: F401  (session fixtures)
    MariaDBServer,
    PostgresServer,
    mariadb_server,
    postgres_server,
)
from integration.db_env import DBEnv, start_db_env
from k8s_emulator.fixtures import kube_api  # noqa: F401  (the Kubernetes API emulator fixture)


@pytest.fixture(scope="session")
def db_env(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer,  # noqa: F811
           mariadb_server: MariaDBServer) -> Iterator[DBEnv]:  # noqa: F811
    yield from start_db_env(tmp_path_factory.mktemp("dbenv"), postgres_server, mariadb_server)
