"""Databases for the PostgreSQL backend tests, on the session's ``postgres_server``
(``tests/dbservers.py``).

``backend_database`` makes a fresh database owned by an ordinary role (the backend needs no
superuser), with an ICU English collation by default, so that the backend must order keys by
code point itself (ICU sorts ``a/é`` before ``a/z``); ``reset_backend`` empties the backend's
tables between tests (much faster than a new database each time). Used by
``test_backend_contract``, ``test_backend_properties`` and ``test_backend_postgres``.
"""

from __future__ import annotations

import psycopg

from dbservers import PostgresServer

__all__ = ["ROLE", "backend_database", "dsn_for", "reset_backend"]

ROLE = "limen_backend_test"


def dsn_for(server: PostgresServer, database: str, user: str = ROLE) -> str:
    return f"host={server.root} port={server.port} user={user} dbname={database}"


def backend_database(server: PostgresServer, name: str, *, icu: bool = True) -> str:
    """Drop and create the database ``name`` (owned by ``ROLE``); its DSN for ``ROLE``."""
    server.create_user(ROLE)
    quoted = '"' + name.replace('"', '""') + '"'
    server.sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    locale = (" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
              " LOCALE 'C.UTF-8'" if icu else "")
    server.sql(f"CREATE DATABASE {quoted} OWNER {ROLE}{locale}")
    return dsn_for(server, name)


def reset_backend(dsn: str) -> None:
    """Empty the backend's tables (when they exist) and set its counters back to 0."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('limen_backend_meta') IS NOT NULL").fetchone()
        if row is not None and row[0]:
            conn.execute("TRUNCATE limen_backend_items, limen_backend_events")
            conn.execute("UPDATE limen_backend_meta SET value = 0 WHERE name <> 'schema'")
