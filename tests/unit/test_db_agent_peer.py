"""Attack: a data connection to the db agent from something that is not a proxy.

A compromised node (its host certificate, of the cluster's CA) or a user (her own database
certificate) that reaches a db agent's dial handler speaks TLS to it and sends a well-formed
session request carrying alice's real database certificate. The agent completes the
handshake (the CA is right) but checks the peer's Limen identity before reading a byte: it is
not the proxy's, so the connection is closed with nothing answered, no upstream certificate
is asked for and nothing reaches the database. The same request from the proxy's certificate
(control) is served: the agent asks for alice's upstream certificate and dials the database
(a fake one that declines TLS, so the client gets the engine's error).

In-process: the demo cluster's auth signs every certificate; a connected socket pair stands
for the tunnel's data connection (``DBService._serve`` is the handler the tunnel agent
hands each dial to).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta

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
from limen.events.emitter import MemoryEmitter
from limen.tunnel.protocol import KIND_DB, MODE_TLS, DialRequest

DATABASE = "orders-dev"
TIMEOUT = 10.0


@dataclass
class FakeDatabase:
    """A PostgreSQL stand-in that records what reaches it and declines TLS."""

    received: list[bytes] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.received.append(await reader.read(8))
        writer.write(b"N")
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@dataclass
class Env:
    auth: AuthServer
    service: DBService
    database: FakeDatabase
    emitter: MemoryEmitter
    issued: list[str]
    request: bytes
    alice: HostCredentials


def _credentials(auth: AuthServer, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(host_id, host_id, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster=auth.cluster_name, host_id=host_id, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


async def _alice(auth: AuthServer) -> HostCredentials:
    """Alice's database certificate for orders-dev (lmsh db login) with its key."""
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    tls_ca = auth.authorities.get(CertAuthorityType.TLS)
    identity = verify_client_cert(login.tls_cert, tls_trust_map([tls_ca]), auth.now())
    cert, _ = await issue_route_cert(auth, identity, key.public_key(), DATABASE, "alice", "")
    return HostCredentials(cluster=auth.cluster_name, host_id="alice", role="user",
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=cert, tls_ca_pem=tls_ca.pem_bundle().encode())


@pytest.fixture
async def env(auth: AuthServer) -> AsyncIterator[Env]:
    database = FakeDatabase()
    server = await asyncio.start_server(database.handle, "127.0.0.1", 0)
    database.port = server.sockets[0].getsockname()[1]
    declared = await auth.store.get(Kind.RESOURCE, DATABASE)
    await presence.heartbeat(auth, declared.to_document(with_status=False), "db-agent-1",
                             "proxy-1", auth.cluster_name, role="db")
    served = Resource(Kind.RESOURCE, DATABASE, labels=declared.labels, spec={
        **declared.spec, "address": f"127.0.0.1:{database.port}"})
    agent = _credentials(auth, "db-agent-1", SystemRole.DB)
    issued: list[str] = []

    async def issuer(db_user: str, public_key_pem: str) -> tuple[bytes, bytes]:
        issued.append(db_user)
        identity = verify_client_cert(agent.tls_cert_pem, {auth.cluster_name: agent.tls_cas()})
        return await issue_upstream_cert(auth, identity, load_public_key(public_key_pem),
                                         db_user)

    emitter = MemoryEmitter()
    service = DBService(agent, DatabaseCatalog([served], [], None), auth, emitter,
                        UpstreamCerts(issuer), lambda: "")
    alice = await _alice(auth)
    request = encode_request(SessionRequest(
        op="connect", protocol="postgres", service=DATABASE,
        user_cert=alice.tls_cert_pem.decode(), db_user="alice", db_name="orders",
        session_id="s-1", client_addr="192.0.2.7:50000"))
    try:
        yield Env(auth, service, database, emitter, issued, request, alice)
    finally:
        server.close()
        await server.wait_closed()


async def _dial(env: Env, peer: HostCredentials) -> bytes:
    """One data connection with ``peer``'s certificate as the TLS client: the session
    request, then everything the agent answers until it closes."""
    agent_end, peer_end = socket.socketpair()
    served = asyncio.create_task(env.service._serve(agent_end, DialRequest(
        kind=KIND_DB, target=DATABASE, mode=MODE_TLS, session_id="s-1")))
    context = peer.client_ssl(check_hostname=False, server_role=SystemRole.DB)
    async with asyncio.timeout(TIMEOUT):
        reader, writer = await asyncio.open_connection(sock=peer_end, ssl=context,
                                                       server_hostname="db-agent-1")
        try:
            writer.write(env.request)
            await writer.drain()
            answer = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):  # the agent may close without close_notify
                await writer.wait_closed()
        await served
    return answer


async def test_the_proxy_is_served_control(auth: AuthServer, env: Env) -> None:
    proxy = _credentials(auth, "proxy-1", SystemRole.PROXY)
    answer = await _dial(env, proxy)
    error = pg.decode_error_fields(pg.MessageSplitter(keep={b"E"}).feed(answer)[0].payload
                                   or b"")
    assert "does not accept TLS" in error["M"]
    assert env.issued == ["alice"]
    assert env.database.received == [pg.encode_ssl_request()]


@pytest.mark.parametrize("who", ["node", "user"])
async def test_a_peer_that_is_not_the_proxy_gets_no_session(
        auth: AuthServer, env: Env, who: str, caplog: pytest.LogCaptureFixture) -> None:
    peer = _credentials(auth, "node-1", SystemRole.NODE) if who == "node" else env.alice
    with caplog.at_level(logging.WARNING, logger="limen.agents.db.db_service"):
        answer = await _dial(env, peer)
    assert answer == b""
    assert env.issued == []
    assert env.database.received == []
    assert env.emitter.events == []
    assert f"a {who} certificate dialled the db agent" in caplog.text
