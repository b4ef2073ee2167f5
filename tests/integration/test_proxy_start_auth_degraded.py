"""A proxy apart from auth (re)started while auth cannot reach its PostgreSQL backend starts
and serves anyway (issue #17: every process survives the loss of another): registering its
public address with auth, the one start-up call that needs the backend, is retried in the
background until auth takes it. Before, ``limen start --roles proxy`` exited with status 3
(and leaked its auth client's connections)."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dbservers import PostgresServer, start_postgres

from .cluster import CommandFailed, LimenCluster, wait_for


def _private(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own: the test stops it."""
    with start_postgres(tmp_path / "pg") as server:
        yield server


def test_a_proxy_starts_while_auths_backend_is_down(tmp_path: Path,
                                                    postgres: PostgresServer) -> None:
    postgres.create_user("limen_degraded")
    postgres.sql("CREATE DATABASE limen_degraded OWNER limen_degraded")
    token = secrets.token_hex(24)
    config = tmp_path / "limen.yaml"
    config.write_text(yaml.safe_dump({
        "backend": {"type": "postgres",
                    "dsn_file": str(_private(tmp_path / "dsn", f"host={postgres.root} port="
                                             f"{postgres.port} user=limen_degraded "
                                             "dbname=limen_degraded")),
                    "ca_key_file": str(_private(tmp_path / "ca.key", secrets.token_hex(32)))},
        "auth": {"proxy_token_file": str(_private(tmp_path / "proxy-token", token))}}))
    auth = LimenCluster(tmp_path / "auth", "degraded", ["--roles", "auth", "-c", str(config)])
    proxy: LimenCluster | None = None
    try:
        auth.start()
        proxy = LimenCluster(tmp_path / "proxy", "degraded", [
            "--roles", "proxy", "--auth-server", auth.auth, "--auth-join",
            auth.listeners["auth_join"], "--token", token,
            "--ca-pin", auth.status()["ca_fingerprints"]["tls"]])
        proxy.start()  # joins while everything is up
        proxy.stop()

        postgres.stop()
        proxy.start()  # raises if it exits before it is ready
        assert proxy.running
        assert "cannot register this proxy's address yet" in proxy.output()

        postgres.start()
        names = (f"newcomer-{n}" for n in itertools.count())

        def link_names_this_proxy() -> bool:
            """A sign-up link carries the registered address (this start's web port)."""
            try:
                link = auth.add_user(next(names), ["access"])["url"]
            except CommandFailed:  # auth's pool reconnecting to PostgreSQL
                return False
            return proxy is not None and proxy.web in link
        wait_for(link_names_this_proxy, 30.0, "the proxy's address registered with auth",
                 interval=0.5)
        assert "auth registered this proxy's address" in proxy.output()
    finally:
        for process in (proxy, auth):
            if process is not None and process.running:
                process.stop()
