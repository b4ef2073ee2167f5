"""Attack: a database certificate used after it expired.

Alice's real database certificate (``issue_route_cert`` of the demo cluster, from her login
certificate, for ``orders-dev`` heartbeated by a db agent), presented once the clock has
passed its expiry: the proxy's :meth:`DBRouter.authenticate` refuses it naming the expiry,
and the db agent's :func:`authorize` (which verifies the certificate again) refuses it too
and audits a failed ``db.session.start``. One second before the expiry both accept it
(control). In-process: no TLS, the certificates are the real ones.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.agents.db.session import authorize
from limen.api.resources import Kind, Resource
from limen.auth import presence
from limen.auth.core import AuthServer
from limen.auth.db_access import issue_route_cert
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.x509_certs import verify_client_cert
from limen.dbproto.session_request import SessionRequest
from limen.errors import AccessDenied
from limen.events.buffer import AuditBuffer
from limen.events.emitter import MemoryEmitter
from limen.proxy.db.db_route import DBRouter
from limen.proxy.routing import ClusterView
from limen.tunnel.server import TunnelServer

DATABASE = "orders-dev"


def _credentials(auth: AuthServer, host_id: str, role: SystemRole) -> HostCredentials:
    key = generate_private_key()
    certs = auth.issue_host_certs(host_id, host_id, role,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    return HostCredentials(cluster=auth.cluster_name, host_id=host_id, role=role.value,
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode())


async def _database(auth: AuthServer) -> Resource:
    db = await auth.store.get(Kind.RESOURCE, DATABASE)
    await presence.heartbeat(auth, db.to_document(with_status=False), "db-agent-1",
                             "proxy-1", auth.cluster_name, role="db")
    return db


async def _route_cert(auth: AuthServer) -> x509.Certificate:
    """Alice's database certificate for orders-dev, as ``lmsh db login`` gets it."""
    key = generate_private_key()
    login = await auth.issue_for_user(await auth.store.get(Kind.USER, "alice"),
                                      public_key_to_openssh(key.public_key()),
                                      timedelta(hours=1))
    identity = verify_client_cert(login.tls_cert, _trust(auth), auth.now())
    pem, _expires = await issue_route_cert(auth, identity, key.public_key(), DATABASE,
                                           "alice", "")
    return x509.load_pem_x509_certificate(pem)


def _trust(auth: AuthServer) -> dict[str, Any]:
    return tls_trust_map([auth.authorities.get(CertAuthorityType.TLS)])


def _expired(expiry: datetime) -> str:
    return re.escape(f"certificate expired at {expiry.isoformat()}")


def _router(auth: AuthServer, now: datetime) -> DBRouter:
    # authenticate() reads neither the tunnel nor the cluster view
    return DBRouter(_credentials(auth, "proxy-1", SystemRole.PROXY), cast(TunnelServer, None),
                    cast(ClusterView, None), MemoryEmitter(), now=lambda: now)


async def test_the_proxy_refuses_an_expired_database_certificate(auth: AuthServer) -> None:
    await _database(auth)
    cert = await _route_cert(auth)
    der = cert.public_bytes(Encoding.DER)
    expiry = cert.not_valid_after_utc
    identity = _router(auth, expiry - timedelta(seconds=1)).authenticate(der)
    assert identity.route_to_db is not None
    assert (identity.username, identity.route_to_db.service) == ("alice", DATABASE)
    with pytest.raises(AccessDenied, match=_expired(expiry)):
        _router(auth, expiry + timedelta(seconds=1)).authenticate(der)


async def test_the_db_agent_refuses_it_too_and_audits_it(auth: AuthServer) -> None:
    db = await _database(auth)
    cert = await _route_cert(auth)
    expiry = cert.not_valid_after_utc
    request = SessionRequest(op="connect", protocol="postgres", service=DATABASE,
                             user_cert=cert.public_bytes(Encoding.PEM).decode(),
                             db_user="alice", db_name="orders", session_id="s-expired",
                             client_addr="192.0.2.7:50000")
    emitter = MemoryEmitter()
    audit = AuditBuffer(emitter)
    session = await authorize(request, db, _trust(auth), auth, audit, "db-agent-1",
                              lambda: expiry - timedelta(seconds=1), cluster=auth.cluster_name)
    assert session.identity.username == "alice"
    with pytest.raises(AccessDenied, match=_expired(expiry)):
        await authorize(request, db, _trust(auth), auth, audit, "db-agent-1",
                        lambda: expiry + timedelta(seconds=1), cluster=auth.cluster_name)
    await audit.aclose()
    [event] = [e.to_dict() for e in emitter.events]
    assert (event["event"], event["success"]) == ("db.session.start", False)
    assert event["session_id"] == "s-expired"
    assert event["db_service"] == DATABASE
    assert event["reason"] == f"certificate refused: certificate expired at " \
                              f"{expiry.isoformat()}"
