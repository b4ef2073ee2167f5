"""Attacks on database access, performed for real against a cluster with a db agent in front
of PostgreSQL 15 and MariaDB 10.11 (the session's ``db_env``: people alice and bob).

- a certificate of a throwaway CA that copies alice's database certificate (subject, Limen
  identity extension, issuer name and key id) presented by ``psql`` to the PostgreSQL front
  and by PyMySQL to the MySQL front: refused in the TLS handshake, audited;
- alice's login certificate (no ``usage: db``, no database route) used with ``psql``:
  refused "not for a database", audited under her name;
- her database certificate used as a login at the proxy's web API (to list nodes and
  recordings, or to mint a certificate for another database): 403;
- bob sends the cancel key of alice's running ``pg_sleep`` over TLS with his own database
  certificate: refused "belongs to another user's session", audited, and alice's query keeps
  running (until she cancels it herself, which works);
- the PostgreSQL front's startup phase: GSSENCRequest answered ``N`` then a plaintext
  StartupMessage refused "requires TLS"; packets of length 3 and 20000, an unknown protocol
  version and a StartupMessage without its terminator refused and audited;
- the MySQL front's handshake: a plaintext HandshakeResponse, garbage after the greeting, a
  packet header announcing 16 MiB, and a client that leaves right after TLS;
after which both fronts still serve, and the daemon logged no traceback.

The unit-level attacks (expired certificates, heartbeats of the wrong kind, a non-proxy
peer at the db agent, what a db agent and a database certificate may do at the auth API) are
in tests/unit/test_db_expired_cert.py, test_db_heartbeat_kinds.py, test_db_agent_peer.py and
test_db_identities_auth_api.py.
"""

from __future__ import annotations

import configparser
import http.client
import json
import os
import select
import socket
import ssl
import struct
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from integration.cluster import wait_for
from integration.db_env import DBEnv, DBPerson
from limen.ca.x509_certs import IDENTITY_OID
from limen.client.profile import ProfileStore
from limen.dbproto import mysql as my
from limen.dbproto import postgres as pg

from .attacks import assert_no_traceback

TIMEOUT = 15.0
PG_SERVICE = "dbtest-pg-main"
MY_GROUP = "client-dbtest-maria-main"
SLEEP_QUERY = "select pg_sleep(30), 'limen-cancel-attack'"
GSSENC_REQUEST = struct.pack("!II", 8, pg.GSSENC_REQUEST_CODE)


@pytest.fixture(scope="module")
def env(db_env: DBEnv) -> DBEnv:
    db_env.alice.db_login("pg-main", "--db-user", "alice", "--db-name", "app")
    db_env.alice.db_login("maria-main", "--db-user", "alice", "--db-name", "app")
    db_env.bob.db_login("pg-main", "--db-user", "bob", "--db-name", "app")
    return db_env


# -- helpers --------------------------------------------------------------------------------

def _address(env: DBEnv, front: str) -> tuple[str, int]:
    host, _, port = env.cluster.listeners[front].rpartition(":")
    return host, int(port)


def _local(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _recv_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a TLS close without close_notify and a
    reset count as the end)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            return received
        if not chunk:
            return received
        received += chunk


def _refusals(env: DBEnv, event_type: str, addresses: set[str],
              what: str) -> dict[str, dict[str, Any]]:
    """The failed ``event_type`` events of each client address, once all are in the log."""
    def found() -> dict[str, dict[str, Any]]:
        by_address = {e.get("remote_addr", ""): e
                      for e in env.audit(event_type, success=False)}
        return by_address if addresses <= by_address.keys() else {}
    return wait_for(found, TIMEOUT, what)


def _count(env: DBEnv, event_type: str, **match: Any) -> int:
    return len(env.audit(event_type, **match))


def _new_events(env: DBEnv, event_type: str, before: int, what: str,
                **match: Any) -> list[dict[str, Any]]:
    return wait_for(lambda: env.audit(event_type, **match)[before:], TIMEOUT, what)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    data = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    return path


def _lookalike(real_pem: bytes, directory: Path) -> tuple[Path, Path]:
    """A certificate signed by a throwaway CA that copies the real one: subject (CN=alice),
    issuer name, every extension (the Limen identity with its database route, the key usages,
    the authority key id of the cluster's CA); only the keys differ."""
    real = x509.load_pem_x509_certificate(real_pem)
    throwaway_ca = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(minutes=5))
               .not_valid_after(now + timedelta(hours=1)))
    copied = []
    for extension in real.extensions:
        if isinstance(extension.value, x509.SubjectKeyIdentifier):
            continue
        builder = builder.add_extension(extension.value, extension.critical)
        copied.append(extension.oid)
    assert IDENTITY_OID in copied
    assert x509.oid.ExtensionOID.AUTHORITY_KEY_IDENTIFIER in copied
    cert = builder.sign(throwaway_ca, hashes.SHA256())
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "lookalike.crt"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    return cert_path, _write_key(directory / "lookalike.key", key)


def _pg_tls_context(person: DBPerson) -> ssl.SSLContext:
    params = person.pg_service(PG_SERVICE)
    context = ssl.create_default_context(cafile=params["sslrootcert"])
    context.load_cert_chain(params["sslcert"], params["sslkey"])
    return context


@contextmanager
def _pg_tls(env: DBEnv, person: DBPerson) -> Iterator[ssl.SSLSocket]:
    """A TLS connection to the PostgreSQL front with ``person``'s database certificate."""
    host, port = _address(env, "postgres")
    raw = socket.create_connection((host, port), timeout=TIMEOUT)
    try:
        raw.sendall(pg.encode_ssl_request())
        assert raw.recv(1) == b"S"
        with _pg_tls_context(person).wrap_socket(raw, server_hostname=host) as tls:
            yield tls
    finally:
        raw.close()


def _read_until(sock: ssl.SSLSocket, types: set[bytes]) -> list[tuple[bytes, bytes]]:
    """Backend messages up to and including the first one of ``types``."""
    splitter = pg.MessageSplitter(keep={bytes([b]) for b in range(256)})
    messages: list[tuple[bytes, bytes]] = []
    while True:
        data = sock.recv(65536)
        assert data, f"the connection closed after {messages}"
        for frame in splitter.feed(data):
            assert frame.payload is not None
            messages.append((frame.type, frame.payload))
            if frame.type in types:
                return messages


def _error(messages: list[tuple[bytes, bytes]]) -> dict[str, str]:
    errors = [pg.decode_error_fields(p) for t, p in messages if t == b"E"]
    assert errors, messages
    return errors[0]


def _cancel(env: DBEnv, person: DBPerson, key: tuple[int, int]) -> str:
    """Send ``key`` as a CancelRequest over TLS with ``person``'s certificate; the client
    address (the audit's remote_addr)."""
    with _pg_tls(env, person) as tls:
        tls.sendall(pg.encode_cancel(*key))
        assert _recv_all(tls) == b""  # a cancel request never gets an answer
        return _local(tls)


def _pg_raw(env: DBEnv, *packets: bytes) -> tuple[bytes, str]:
    """Plaintext packets to the PostgreSQL front (after a GSSENCRequest, its one-byte answer
    is read first): everything that came back, and the client address."""
    with closing(socket.create_connection(_address(env, "postgres"), timeout=TIMEOUT)) as sock:
        answers = b""
        for packet in packets:
            sock.sendall(packet)
            if packet == GSSENC_REQUEST:
                answers += sock.recv(1)
        return answers + _recv_all(sock), _local(sock)


def _my_options(person: DBPerson) -> dict[str, str]:
    parser = configparser.ConfigParser(allow_no_value=True)
    parser.read(person.user.home / ".my.cnf")
    return {k: (v or "").strip('"') for k, v in parser[MY_GROUP].items()}


def _my_connect(person: DBPerson, **overrides: Any) -> Any:
    group = _my_options(person)
    options: dict[str, Any] = {
        "host": group["host"], "port": int(group["port"]), "user": group["user"],
        "database": group.get("database"), "ssl_ca": group["ssl-ca"],
        "ssl_cert": group["ssl-cert"], "ssl_key": group["ssl-key"], "ssl_verify_cert": True,
        "ssl_verify_identity": True, "connect_timeout": 10}
    options.update(overrides)
    return pymysql.connect(**options)


def _my_raw(env: DBEnv, data: bytes) -> tuple[list[my.Packet], str]:
    """Read the MySQL front's greeting, send ``data``: the packets that came back after the
    greeting, and the client address."""
    with closing(socket.create_connection(_address(env, "mysql"), timeout=TIMEOUT)) as sock:
        splitter = my.PacketSplitter()
        greeting: list[my.Packet] = []
        while not greeting:
            chunk = sock.recv(65536)
            assert chunk, "no greeting"
            greeting = splitter.feed(chunk)
        assert greeting[0].seq == 0
        sock.sendall(data)
        return splitter.feed(_recv_all(sock)), _local(sock)


def _my_err(packets: list[my.Packet]) -> my.ErrPacket:
    assert len(packets) == 1, packets
    assert my.is_err(packets[0].payload), packets
    return my.decode_err(packets[0].payload)


# -- a certificate of another CA ------------------------------------------------------------

def test_a_lookalike_certificate_of_another_ca_is_refused_in_the_handshake(
        env: DBEnv, tmp_path: Path) -> None:
    alice = env.alice
    service = alice.pg_service(PG_SERVICE)
    cert, key = _lookalike(Path(service["sslcert"]).read_bytes(), tmp_path / "pg")
    sessions = _count(env, "db.session.start", success=True, user="alice")
    before = _count(env, "db.session.start", success=False, db_protocol="postgres")
    host, port = _address(env, "postgres")
    refused = alice.psql(f"host={host} port={port} user=alice dbname=app sslmode=require "
                         f"sslcert={cert} sslkey={key}", "-c", "select 'leaked'", check=False)
    assert refused.returncode != 0
    assert "leaked" not in refused.stdout
    events = _new_events(env, "db.session.start", before, "the postgres refusal",
                         success=False, db_protocol="postgres")
    assert any(e["reason"].startswith("TLS handshake failed") for e in events), events

    cert, key = _lookalike(Path(_my_options(alice)["ssl-cert"]).read_bytes(), tmp_path / "my")
    before = _count(env, "db.session.start", success=False, db_protocol="mysql")
    with pytest.raises(pymysql.err.OperationalError):
        _my_connect(alice, ssl_cert=str(cert), ssl_key=str(key))
    events = _new_events(env, "db.session.start", before, "the mysql refusal",
                         success=False, db_protocol="mysql")
    assert any(e["reason"].startswith("TLS handshake failed") for e in events), events
    assert _count(env, "db.session.start", success=True, user="alice") == sessions


# -- the login certificate -----------------------------------------------------------------

def test_the_login_certificate_is_not_a_database_certificate(env: DBEnv) -> None:
    alice = env.alice
    login_cert = ProfileStore(alice.user.home).tls_cert_path(alice.user.proxy, "alice")
    assert login_cert.is_file()
    refused = alice.psql(f"service={PG_SERVICE} sslcert={login_cert}", "-c", "select 1",
                         check=False)
    assert refused.returncode != 0
    assert "not for a database" in refused.stderr
    events = env.wait_audit("db.session.start", "the refusal", user="alice", success=False)
    assert any("not for a database" in e.get("reason", "") for e in events), events


# -- the database certificate is not a login ------------------------------------------------

def _web(env: DBEnv, cert: Path, key: Path, method: str, path: str,
         body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """A call to the proxy's web API with ``cert`` as the client certificate."""
    context = ssl.create_default_context(
        cafile=env.alice.pg_service(PG_SERVICE)["sslrootcert"])
    context.load_cert_chain(cert, key)
    host, _, port = env.cluster.web.rpartition(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=TIMEOUT)
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def test_a_database_certificate_is_no_login_at_the_web_api(env: DBEnv) -> None:
    alice = env.alice
    service = alice.pg_service(PG_SERVICE)
    db_cert, key = Path(service["sslcert"]), Path(service["sslkey"])
    login_cert = ProfileStore(alice.user.home).tls_cert_path(alice.user.proxy, "alice")
    assert _web(env, login_cert, key, "GET", "/v1/webapi/user/nodes")[0] == 200  # control
    for method, path, body in (
            ("GET", "/v1/webapi/user/nodes", None),
            ("GET", "/v1/webapi/user/recordings", None),
            ("POST", "/v1/webapi/user/db/certs", {"service": "maria-main",
                                                  "db_user": "alice"})):
        status, answer = _web(env, db_cert, key, method, path, body)
        assert status == 403, (path, answer)
        assert "restricted to db" in answer["error"]["message"], answer


# -- another user's cancel key -------------------------------------------------------------

def _running(env: DBEnv) -> str:
    return env.pg.sql("select count(*) from pg_stat_activity where state = 'active' and "
                      "query like '%limen-cancel-attack%' and pid <> pg_backend_pid()")


def test_bob_cannot_cancel_alices_query_with_her_key(env: DBEnv) -> None:
    try:
        with _pg_tls(env, env.alice) as session:
            session.sendall(pg.encode_startup({"user": "alice", "database": "app"}))
            login = _read_until(session, {b"Z", b"E"})
            keys = [pg.decode_backend_key_data(p) for t, p in login if t == b"K"]
            assert len(keys) == 1, login
            session.sendall(pg.encode_query(SLEEP_QUERY))
            wait_for(lambda: _running(env) == "1", TIMEOUT, "alice's query to run")

            bob_address = _cancel(env, env.bob, keys[0])
            refused = _refusals(env, "db.session.cancel", {bob_address}, "bob's refusal")
            assert refused[bob_address]["reason"] == \
                "the cancel key belongs to another user's session"
            assert _running(env) == "1"  # alice's query was not cancelled
            assert session.pending() == 0
            assert select.select([session], [], [], 0)[0] == []  # and she got no error

            _cancel(env, env.alice, keys[0])  # her own certificate: the cancel goes through
            error = _error(_read_until(session, {b"E"}))
            assert error["C"] == "57014", error  # query_canceled
            env.wait_audit("db.session.cancel", "alice's cancel", success=True,
                           db_service="pg-main")
            session.sendall(pg.encode_terminate())
    finally:
        env.pg.sql("select pg_terminate_backend(pid) from pg_stat_activity where query like "
                   "'%limen-cancel-attack%' and pid <> pg_backend_pid()")


# -- the PostgreSQL startup phase ----------------------------------------------------------

def test_gssenc_is_declined_and_a_plaintext_startup_after_it_is_refused(env: DBEnv) -> None:
    answer, address = _pg_raw(env, GSSENC_REQUEST,
                              pg.encode_startup({"user": "alice", "database": "app"}))
    assert answer[:1] == b"N"
    error = _error([(f.type, f.payload or b"")
                    for f in pg.MessageSplitter(keep={b"E"}).feed(answer[1:])])
    assert "requires TLS" in error["M"]
    refused = _refusals(env, "db.session.start", {address}, "the plaintext refusal")
    assert "requires TLS" in refused[address]["reason"]


MALFORMED_STARTUPS = {
    "length 3": struct.pack("!I", 3),
    "length 20000": struct.pack("!II", 20000, pg.PROTOCOL_3) + b"user\0alice\0",
    "protocol 4.0": pg.encode_startup({"user": "alice"}, version=4 << 16),
    "no terminator": struct.pack("!II", 8 + 11, pg.PROTOCOL_3) + b"user\0alice\0",
}


def test_malformed_startup_packets_are_refused_and_the_front_keeps_serving(
        env: DBEnv) -> None:
    addresses: dict[str, str] = {}
    for name, packet in MALFORMED_STARTUPS.items():
        answer, addresses[name] = _pg_raw(env, packet)
        if answer:  # an ErrorResponse, or nothing (the connection closed)
            frames = pg.MessageSplitter(keep={b"E"}).feed(answer)
            assert [f.type for f in frames] == [b"E"], (name, answer)
    refused = _refusals(env, "db.session.start", set(addresses.values()), "the refusals")
    for name, address in addresses.items():
        assert refused[address]["reason"].startswith("malformed startup"), (name, refused)
        assert refused[address]["db_protocol"] == "postgres"
    assert env.alice.psql(f"service={PG_SERVICE}", "-c", "select 'still serving'") \
        .stdout.strip() == "still serving"
    assert_no_traceback(env.cluster)


# -- the MySQL handshake -------------------------------------------------------------------

def _plaintext_hello() -> bytes:
    return my.encode_packet(1, my.encode_handshake_response(my.HandshakeResponse(
        capabilities=my.CLIENT_PROTOCOL_41 | my.CLIENT_SECURE_CONNECTION
        | my.CLIENT_PLUGIN_AUTH | my.CLIENT_CONNECT_WITH_DB,
        max_packet=1 << 24, charset=45, username="alice", auth_response=b"",
        database="app", auth_plugin="mysql_native_password", attributes={})))


def test_mysql_handshake_attacks_are_refused_and_the_front_keeps_serving(env: DBEnv) -> None:
    packets, plaintext = _my_raw(env, _plaintext_hello())
    assert "Limen requires TLS" in _my_err(packets).message
    packets, garbage = _my_raw(env, my.encode_packet(1, b"\x00garbage\xff" * 3))
    assert "malformed handshake" in _my_err(packets).message
    packets, oversized = _my_raw(env, b"\xff\xff\xff\x01" + b"x" * 64)
    assert "oversized handshake packet" in _my_err(packets).message
    refused = _refusals(env, "db.session.start", {plaintext, garbage, oversized},
                        "the refusals")
    assert "requires TLS" in refused[plaintext]["reason"]
    assert refused[garbage]["reason"].startswith("malformed handshake")
    assert refused[oversized]["reason"].startswith("malformed handshake")
    assert all(refused[a]["db_protocol"] == "mysql" for a in (plaintext, garbage, oversized))

    # a client that leaves right after the TLS handshake
    with closing(socket.create_connection(_address(env, "mysql"), timeout=TIMEOUT)) as sock:
        greeting = my.PacketSplitter().feed(sock.recv(65536))
        assert greeting
        sock.sendall(my.encode_packet(1, my.encode_ssl_request(my.SSLRequest(
            my.CLIENT_PROTOCOL_41 | my.CLIENT_SSL | my.CLIENT_SECURE_CONNECTION, 1 << 24, 45))))
        context = ssl.create_default_context(cafile=_my_options(env.alice)["ssl-ca"])
        host = _address(env, "mysql")[0]
        with context.wrap_socket(sock, server_hostname=host) as tls:
            assert tls.version() is not None  # the handshake is done; nothing more is sent

    with _my_connect(env.alice) as conn, conn.cursor() as cursor:
        cursor.execute("select 'still serving'")
        assert cursor.fetchone() == ("still serving",)
    assert_no_traceback(env.cluster)
