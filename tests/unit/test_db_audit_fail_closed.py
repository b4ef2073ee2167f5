"""The db agent's audit path end to end inside one process: queries reach the database
without waiting for the audit log, every query is in the log once the session's end event
is, and a log that cannot be written ends the session (fail closed): the database is told to
terminate, the client gets a FATAL error that says why, nothing more is forwarded.

The agent (``DBService._serve``, the handler the tunnel hands each dial to) serves a data
connection from the proxy's certificate over a socket pair, in front of a PostgreSQL
stand-in that speaks TLS and answers every simple query; its audit log is a real FileLog
that can be made to fail as a full disk does (``OSError: No space left on device``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from limen.agents.db.catalog import DatabaseCatalog
from limen.agents.db.db_service import DBService
from limen.agents.db.upstream_tls import UpstreamCerts
from limen.api.resources import Kind, Resource
from limen.auth import presence
from limen.auth.core import AuthServer
from limen.auth.db_access import issue_route_cert, issue_upstream_cert
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import (
    generate_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_to_openssh,
)
from limen.ca.x509_certs import verify_client_cert
from limen.dbproto import postgres as pg
from limen.dbproto.session_request import SessionRequest, encode_request
from limen.events import FileLog, search
from limen.events.event import AuditEvent
from limen.tunnel.protocol import KIND_DB, MODE_TLS, DialRequest

DATABASE = "orders-dev"
TIMEOUT = 10.0


class BreakableLog:
    """A real FileLog whose writes fail with ENOSPC once ``broken`` is set."""

    def __init__(self, directory: Path) -> None:
        self.log = FileLog(directory, fsync=False)
        self.broken = False

    async def emit(self, event: AuditEvent) -> None:
        await self.emit_many([event])

    async def emit_many(self, events: Sequence[AuditEvent]) -> None:
        if self.broken:
            raise OSError(28, "No space left on device")
        await self.log.emit_many(events)


@dataclass
class FakePostgres:
    """TLS, AuthenticationOk, then CommandComplete + ReadyForQuery for every simple query."""

    tls: object
    queries: list[str] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            assert await reader.readexactly(8) == pg.encode_ssl_request()
            writer.write(b"S")
            await writer.drain()
            await writer.start_tls(self.tls)  # type: ignore[arg-type]
            header = await reader.readexactly(4)
            await reader.readexactly(pg.startup_length(header) - 4)
            writer.write(pg.encode_authentication_ok() + pg.encode_backend_key_data(7, 8)
                         + pg.encode_ready_for_query())
            splitter = pg.MessageSplitter(keep={b"Q"})
            while data := await reader.read(65536):
                for frame in splitter.feed(data):
                    if frame.type == b"X":  # Terminate: the server closes
                        return
                    if frame.type == b"Q" and frame.payload is not None:
                        self.queries.append(pg.decode_query(frame.payload))
                        writer.write(pg.encode_message(b"C", b"SELECT 1\0")
                                     + pg.encode_ready_for_query())
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _credentials(auth: AuthServer, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(host_id, host_id, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster=auth.cluster_name, host_id=host_id, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


async def _alice_cert(auth: AuthServer) -> str:
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    tls_ca = auth.authorities.get(CertAuthorityType.TLS)
    identity = verify_client_cert(login.tls_cert, tls_trust_map([tls_ca]), auth.now())
    cert, _ = await issue_route_cert(auth, identity, key.public_key(), DATABASE, "alice", "")
    return cert.decode() if isinstance(cert, bytes) else cert


@dataclass
class Env:
    service: DBService
    database: FakePostgres
    log: BreakableLog
    proxy: HostCredentials
    request: bytes
    directory: Path


@pytest.fixture
async def env(auth: AuthServer, tmp_path: Path) -> AsyncIterator[Env]:
    declared = await auth.store.get(Kind.RESOURCE, DATABASE)
    await presence.heartbeat(auth, declared.to_document(with_status=False), "db-agent-1",
                             "proxy-1", auth.cluster_name, role="db")
    request = encode_request(SessionRequest(
        op="connect", protocol="postgres", service=DATABASE, user_cert=await _alice_cert(auth),
        db_user="alice", db_name="orders", session_id="s-1", client_addr="192.0.2.7:50000"))
    fake_server = _credentials(auth, "pg-fake", SystemRole.DB)
    database = FakePostgres(fake_server.server_ssl())
    server = await asyncio.start_server(database.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    served = Resource(Kind.RESOURCE, DATABASE, labels=declared.labels, spec={
        **declared.spec, "address": f"127.0.0.1:{port}", "tls": {"mode": "insecure"}})
    agent = _credentials(auth, "db-agent-1", SystemRole.DB)

    async def issuer(db_user: str, public_key_pem: str) -> tuple[bytes, bytes]:
        identity = verify_client_cert(agent.tls_cert_pem, {auth.cluster_name: agent.tls_cas()})
        return await issue_upstream_cert(auth, identity, load_public_key(public_key_pem),
                                         db_user)

    log = BreakableLog(tmp_path / "events")
    service = DBService(agent, DatabaseCatalog([served], [], None), auth, log,
                        UpstreamCerts(issuer), lambda: "")
    try:
        yield Env(service, database, log, _credentials(auth, "proxy-1", SystemRole.PROXY),
                  request, tmp_path / "events")
    finally:
        await service.audit.aclose()
        await log.log.aclose()
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def session(env: Env) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                   asyncio.Task[None]]]:
    """A data connection to the agent as the proxy makes it, logged in (ReadyForQuery)."""
    agent_end, proxy_end = socket.socketpair()
    served = asyncio.create_task(env.service._serve(agent_end, DialRequest(
        kind=KIND_DB, target=DATABASE, mode=MODE_TLS, session_id="s-1")))
    context = env.proxy.client_ssl(check_hostname=False, server_role=SystemRole.DB)
    reader, writer = await asyncio.open_connection(sock=proxy_end, ssl=context,
                                                   server_hostname="db-agent-1")
    try:
        writer.write(env.request)
        await writer.drain()
        await _until(reader, b"Z")
        yield reader, writer, served
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        async with asyncio.timeout(TIMEOUT):
            await served


async def _until(reader: asyncio.StreamReader, kind: bytes) -> bytes:
    """Read until a message of type ``kind`` arrived; everything read (b"" at EOF)."""
    seen = b""
    async with asyncio.timeout(TIMEOUT):
        splitter = pg.MessageSplitter(keep=set())
        while data := await reader.read(65536):
            seen += data
            if any(frame.type == kind for frame in splitter.feed(data)):
                return seen
    return seen


async def test_every_query_is_in_the_log_when_the_session_ends(env: Env) -> None:
    async with session(env) as (reader, writer, served):
        for n in range(50):
            writer.write(pg.encode_query(f"select {n}"))
            await _until(reader, b"Z")
        writer.write(pg.encode_terminate())
        await writer.drain()
    async with asyncio.timeout(TIMEOUT):
        await served
    assert env.database.queries == [f"select {n}" for n in range(50)]
    events = search(env.directory, ["db.session.query", "db.session.end"])
    assert [e.get("query") for e in events[:-1]] == [f"select {n}" for n in range(50)]
    assert events[-1]["event"] == "db.session.end"
    assert env.service.audit.batches < 60  # batched where queries came close together


async def test_a_log_that_cannot_be_written_ends_the_session(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="limen.agents.db.audited_relay"):
        async with session(env) as (reader, writer, _served):
            writer.write(pg.encode_query("select 1"))
            await _until(reader, b"Z")
            await env.service.audit.flush()  # select 1's event is on disk
            env.log.broken = True  # the disk is full from now on
            writer.write(pg.encode_query("select 2"))
            await writer.drain()
            rest = await _until(reader, b"never")  # returns at EOF: the agent closed
            assert reader.at_eof()
            async with asyncio.timeout(TIMEOUT):
                await env.database.closed.wait()  # the database connection is gone too
    # the client got the last answer, then a FATAL error naming the reason, then the end
    frames = pg.MessageSplitter(keep={b"E"}).feed(rest)
    assert [f.type for f in frames][-1] == b"E"
    error = pg.decode_error_fields(frames[-1].payload or b"")
    assert (error["S"], error["C"]) == ("FATAL", "57P01")
    assert error["M"].startswith("Limen ended the session: the audit log cannot be written")
    assert "db session s-1 ended: the audit log cannot be written" in caplog.text
    assert "No space left on device" in caplog.text
    assert env.database.queries[0] == "select 1"
    assert len(env.database.queries) <= 2  # nothing after the failure went through
    written = [e.get("query") for e in search(env.directory, "db.session.query")]
    assert written == ["select 1"]
