"""Databases on the proxy's web port by ALPN (single-port access, issues #14 and #20), end to
end against the session's ``db_env`` (a real ``limen start`` with a db agent in front of
PostgreSQL 15 and MariaDB):

- ``lmsh proxy db`` carries ``psql`` and ``mariadb`` over the web port (its only connection
  to the proxy goes there, not to the db listeners), each query audited; ``psql``'s Ctrl-C
  cancels a running query through the same route (the CancelRequest is TLS with the
  database certificate);
- a raw client on ``limen-postgres`` may still send an SSLRequest: answered ``N``, then the
  startup goes on in the web port's TLS;
- attacks on the route: no client certificate (PostgreSQL ErrorResponse / MySQL ERR, audited
  as a failed ``db.session.start`` with the client's address); a lookalike certificate of
  another CA (refused in the web port's TLS handshake, before any route sees it: no session,
  and the route still serves);
- an older proxy (its web port does not select the ALPN): ``lmsh proxy db``'s local proxy
  falls back to the db listener the ping announced, says so once, and the query works.

The expired certificate is in test_db_alpn_certs.py (OpenSSL refuses it in the handshake;
the route's own check is tested there with its clock past the expiry).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, RouteToDatabase, SystemRole
from limen.ca.keys import KeyType, generate_private_key, private_key_to_pem
from limen.ca.tls import server_context
from limen.ca.x509_certs import certificate_to_pem, sign_client_cert, sign_server_cert
from limen.client.db_local_proxy import LocalDbProxy, Upstream, upstream_context
from limen.client.db_profiles import db_files
from limen.client.profile import ProfileStore
from limen.dbproto import mysql as my
from limen.dbproto import postgres as pg
from limen.dbproto.alpn import ALPN_MYSQL, ALPN_POSTGRES

from .cluster import command, run, wait_for
from .db_env import DBEnv, DBPerson

DEADLINE = 15.0
PG_SERVICE = "dbtest-pg-main"
LOCAL = "host=127.0.0.1 port={port} user=alice dbname=app sslmode=disable"


@pytest.fixture(scope="module")
def env(db_env: DBEnv) -> DBEnv:
    db_env.alice.db_login("pg-main", "--db-user", "alice", "--db-name", "app")
    db_env.alice.db_login("maria-main", "--db-user", "alice", "--db-name", "app")
    return db_env


# -- helpers --------------------------------------------------------------------------------

def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


@contextmanager
def _proxy_db(person: DBPerson, name: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``lmsh proxy db NAME --port 0`` running: the process and the port it printed. Its
    stderr is checked at the end: no fallback to a db listener."""
    with subprocess.Popen([command("lmsh"), "proxy", "db", name, "--port", "0"],
                          env=person.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], DEADLINE)
            assert ready, "lmsh proxy db printed nothing"
            line = process.stdout.readline()
            assert line.startswith(f"Serving {name} ("), line
            assert " on 127.0.0.1:" in line, line
            yield process, int(line.split(" on 127.0.0.1:")[1].split()[0])
        finally:
            process.terminate()
            _out, err = process.communicate(timeout=DEADLINE)
    assert "older proxy" not in err, err
    assert "failed" not in err, err


def _remote_ports(pid: int) -> set[int]:
    """The remote ports of the established TCP connections of process ``pid``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                ports.add(int(fields[2].rpartition(":")[2], 16))
    return ports


def _tls_context(person: DBPerson, alpn: str, *, cert: bool = True) -> ssl.SSLContext:
    """Verifies the proxy against the cluster CA saved at login; presents ``person``'s
    PostgreSQL database certificate when ``cert``."""
    params = person.pg_service(PG_SERVICE)
    context = ssl.create_default_context(cafile=params["sslrootcert"])
    context.check_hostname = False  # the proxy's certificate names its host, not 127.0.0.1
    if cert:
        context.load_cert_chain(params["sslcert"], params["sslkey"])
    context.set_alpn_protocols([alpn])
    return context


@contextmanager
def _routed(env: DBEnv, context: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
    host, port = env.cluster.web.rsplit(":", 1)
    with closing(socket.create_connection((host, int(port)), timeout=DEADLINE)) as raw, \
            context.wrap_socket(raw, server_hostname=host) as tls:
        assert tls.selected_alpn_protocol() in (ALPN_POSTGRES, ALPN_MYSQL)
        yield tls


def _local(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _pg_messages(sock: ssl.SSLSocket, until: set[bytes]) -> list[tuple[bytes, bytes]]:
    splitter = pg.MessageSplitter(keep={bytes([b]) for b in range(256)})
    messages: list[tuple[bytes, bytes]] = []
    while True:
        data = sock.recv(65536)
        assert data, f"the connection closed after {messages}"
        for frame in splitter.feed(data):
            assert frame.payload is not None
            messages.append((frame.type, frame.payload))
            if frame.type in until:
                return messages


def _my_packets(sock: ssl.SSLSocket, count: int) -> list[my.Packet]:
    splitter = my.PacketSplitter()
    packets: list[my.Packet] = []
    while len(packets) < count:
        data = sock.recv(65536)
        assert data, f"the connection closed after {packets}"
        packets += splitter.feed(data)
    return packets


def _refusal(env: DBEnv, address: str, protocol: str) -> dict[str, Any]:
    """The failed ``db.session.start`` of the client at ``address``."""
    def found() -> list[dict[str, Any]]:
        return [e for e in env.audit("db.session.start", success=False, db_protocol=protocol)
                if e.get("remote_addr") == address]
    return wait_for(found, DEADLINE, f"the audited refusal of {address}")[0]


# -- lmsh proxy db over the web port ---------------------------------------------------------

def test_psql_through_lmsh_proxy_db_goes_over_the_web_port_and_is_audited(env: DBEnv) -> None:
    web, postgres = _port(env.cluster.web), _port(env.cluster.listeners["postgres"])
    with _proxy_db(env.alice, "pg-main") as (process, port):
        with psycopg.connect(LOCAL.format(port=port), connect_timeout=int(DEADLINE)) as conn:
            assert conn.execute("select 'marker-alpn-psycopg'").fetchone() == (
                "marker-alpn-psycopg",)
            ports = _remote_ports(process.pid)
            assert web in ports, ports
            assert postgres not in ports, ports
        result = env.alice.psql(LOCAL.format(port=port), "-c",
                                "select current_user, current_database(), 'marker-alpn-psql'")
        assert result.stdout.strip() == "alice|app|marker-alpn-psql"
    queries = env.wait_audit("db.session.query", "the query", user="alice",
                             db_service="pg-main")
    assert any("marker-alpn-psql" in q.get("query", "") for q in queries)


def test_ctrl_c_in_psql_cancels_through_the_web_port(env: DBEnv) -> None:
    cancels = len(env.audit("db.session.cancel", success=True))
    with _proxy_db(env.alice, "pg-main") as (_process, port), \
            subprocess.Popen(["psql", "-X", LOCAL.format(port=port), "-c",
                              "select pg_sleep(60), 'alpn-cancel'"], env=env.alice.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as psql:
        try:
            wait_for(lambda: env.pg.sql(
                "select count(*) from pg_stat_activity where query = "
                "'select pg_sleep(60), ''alpn-cancel''' and state = 'active'") == "1",
                DEADLINE, "the query to run")
            started = time.monotonic()
            psql.send_signal(signal.SIGINT)
            _, err = psql.communicate(timeout=DEADLINE)
        finally:
            psql.kill()
    assert "canceling statement due to user request" in err
    assert time.monotonic() - started < 10
    wait_for(lambda: len(env.audit("db.session.cancel", success=True)) > cancels, DEADLINE,
             "the audited cancel")


def test_mariadb_through_lmsh_proxy_db_goes_over_the_web_port_and_is_audited(
        env: DBEnv) -> None:
    with _proxy_db(env.alice, "maria-main") as (_process, port):
        result = run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u",
                      "alice", "--skip-ssl", "-N", "-B", "app", "-e",
                      "select current_user(), database(), 'marker-alpn-my'"],
                     env=env.alice.env)
    assert result.stdout.split() == ["alice@%", "app", "marker-alpn-my"]
    queries = env.wait_audit("db.session.query", "the query", db_service="maria-main")
    assert any("marker-alpn-my" in q.get("query", "") for q in queries)


# -- the route with raw clients --------------------------------------------------------------

def test_an_sslrequest_inside_the_route_is_answered_n_and_the_startup_goes_on(
        env: DBEnv) -> None:
    with _routed(env, _tls_context(env.alice, ALPN_POSTGRES)) as tls:
        tls.sendall(pg.encode_ssl_request())
        assert tls.recv(1) == b"N"
        tls.sendall(pg.encode_startup({"user": "alice", "database": "app"}))
        messages = _pg_messages(tls, {b"Z", b"E"})
        assert messages[-1][0] == b"Z", messages
        tls.sendall(pg.encode_query("select 'marker-alpn-raw'"))
        answer = _pg_messages(tls, {b"Z"})
        assert any(b"marker-alpn-raw" in payload for kind, payload in answer if kind == b"D")
        tls.sendall(pg.encode_terminate())


def test_no_client_certificate_on_the_route_is_refused_and_audited(env: DBEnv) -> None:
    with _routed(env, _tls_context(env.alice, ALPN_POSTGRES, cert=False)) as tls:
        tls.sendall(pg.encode_startup({"user": "alice", "database": "app"}))
        error = pg.decode_error_fields(_pg_messages(tls, {b"E"})[-1][1])
        pg_client = _local(tls)
    assert "no client certificate" in error["M"], error
    assert "no client certificate" in _refusal(env, pg_client, "postgres")["reason"]

    with _routed(env, _tls_context(env.alice, ALPN_MYSQL, cert=False)) as tls:
        greeting = my.decode_handshake(_my_packets(tls, 1)[0].payload)
        assert not greeting.capabilities & my.CLIENT_SSL  # TLS already: no switch offered
        caps = my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION | my.CLIENT_CONNECT_WITH_DB
        tls.sendall(my.encode_packet(1, my.encode_handshake_response(my.HandshakeResponse(
            caps, 1 << 24, 45, "alice", b"", "app", None, {}))))
        answer = _my_packets(tls, 1)[0]
        my_client = _local(tls)
    assert answer.seq == 2
    assert my.is_err(answer.payload)
    assert "no client certificate" in my.decode_err(answer.payload).message
    assert "no client certificate" in _refusal(env, my_client, "mysql")["reason"]


def test_a_certificate_of_another_ca_is_refused_in_the_web_port_handshake(
        env: DBEnv, tmp_path: Path) -> None:
    foreign = CertAuthority.generate("dbtest", CertAuthorityType.TLS)  # same cluster name
    key = generate_private_key(KeyType.ECDSA_P256)
    cert = sign_client_cert(foreign, key.public_key(), Identity(
        username="alice", cluster="dbtest", route_to_db=RouteToDatabase("pg-main", "alice",
                                                                         "app"),
        usage=("db",)), timedelta(hours=1))
    pem = tmp_path / "foreign.pem"
    pem.write_text(certificate_to_pem(cert) + private_key_to_pem(key))
    context = _tls_context(env.alice, ALPN_POSTGRES, cert=False)
    context.load_cert_chain(pem)
    sessions = len(env.audit("db.session.start", success=True, user="alice"))
    host, port = env.cluster.web.rsplit(":", 1)
    answer = b""
    # TLS 1.3: the server's verdict on the client's certificate comes after the client's
    # handshake finished: an alert or the end on the first read
    with closing(socket.create_connection((host, int(port)), timeout=DEADLINE)) as raw, \
            contextlib.suppress(ssl.SSLError, ConnectionResetError), \
            context.wrap_socket(raw, server_hostname=host) as tls:
        tls.sendall(pg.encode_startup({"user": "alice", "database": "app"}))
        answer = tls.recv(65536)
    assert answer == b""  # no ErrorResponse: no route saw the connection
    assert len(env.audit("db.session.start", success=True, user="alice")) == sessions
    # the route still serves
    with _routed(env, _tls_context(env.alice, ALPN_POSTGRES)) as tls:
        tls.sendall(pg.encode_startup({"user": "alice", "database": "app"}))
        assert _pg_messages(tls, {b"Z", b"E"})[-1][0] == b"Z"
        tls.sendall(pg.encode_terminate())


# -- an older proxy: the fallback ------------------------------------------------------------

async def _older_web_port(cluster: str) -> tuple[asyncio.Server, str]:
    """A TLS listener as an older proxy's web port: a proxy certificate (of a CA made here,
    returned as PEM for the client to trust), ALPN ``http/1.1`` only; it closes each
    connection after the handshake."""
    ca = CertAuthority.generate(cluster, CertAuthorityType.TLS)
    key = generate_private_key(KeyType.ECDSA_P256)
    cert = sign_server_cert(ca, key.public_key(), ["localhost"], ["127.0.0.1"],
                            timedelta(hours=1),
                            Identity.for_host(cluster, "old-proxy", "old", SystemRole.PROXY))
    context = server_context([cert], key, require_client_cert=False)
    context.set_alpn_protocols(["http/1.1"])

    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=context)
    return server, ca.pem_bundle()


def test_lmsh_proxy_db_falls_back_to_the_db_listener_of_an_older_proxy(env: DBEnv) -> None:
    store = ProfileStore(env.alice.user.home)
    profile = store.current()
    files = db_files(store, profile, "pg-main")
    reports: list[str] = []
    pg_host, pg_port = env.cluster.listeners["postgres"].rsplit(":", 1)

    async def scenario() -> None:
        older, old_ca = await _older_web_port(profile.cluster)
        old_port = older.sockets[0].getsockname()[1]
        web = Upstream("127.0.0.1", old_port, upstream_context(
            files, {profile.cluster: old_ca.encode()}), alpn=ALPN_POSTGRES)
        fallback = Upstream(pg_host, int(pg_port),
                            upstream_context(files, store.trusted_cas(profile.proxy)))
        local = LocalDbProxy("postgres", web, fallback=fallback, report=reports.append)
        _host, port = await local.start()
        try:
            for marker in ("marker-fallback-1", "marker-fallback-2"):
                async with await psycopg.AsyncConnection.connect(
                        LOCAL.format(port=port), connect_timeout=int(DEADLINE)) as conn:
                    cursor = await conn.execute(f"select '{marker}'")
                    assert await cursor.fetchone() == (marker,)
        finally:
            await local.close()
            older.close()
            await older.wait_closed()

    asyncio.run(scenario())
    assert len(reports) == 1, reports  # once: the second connection went straight there
    assert "older proxy" in reports[0]
    assert f"listener at {pg_host}:{pg_port}" in reports[0]
    queries = env.wait_audit("db.session.query", "the query", user="alice")
    assert any("marker-fallback-2" in q.get("query", "") for q in queries)
