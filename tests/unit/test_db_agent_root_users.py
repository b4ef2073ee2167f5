"""Attacks on a leaf's db agent with the trust of an agent apart from auth: the leaf's real
``AuthService`` (its ``GET /v1/trust/roots`` over mutual TLS), a ``RemoteTrustCache`` polled
with the db agent's credentials, ``limen.agents.root_users.user_trust`` and a
``StoreAccessPolicy`` mapping roles with the trust's role_map, as ``limen start --roles db``
wires them; the agent's :func:`authorize` decides. The leaf and its role_map:
``leaf_trust_env``.

A root user's database certificate (signed by the root's TLS CA, routed to the leaf) with
roles the role_map maps is accepted and decided with the mapped role; each of these is
refused with its reason and a failed ``db.session.start``: roles mapping to nothing, a
certificate of a cluster the leaf does not trust, one claiming the root but signed by another
CA, one signed by the root's database CA (the wrong CA type), an expired one, one routed to
another cluster, and any once the leaf disables the trust.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from leaf_trust_env import Leaf, agent_trust, leaf_auth

from limen.agents.db.session import authorize
from limen.agents.root_users import user_trust
from limen.api.resources import Kind
from limen.auth.client import AuthClient
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, RouteToDatabase, SystemRole
from limen.ca.keys import generate_private_key
from limen.ca.x509_certs import sign_client_cert
from limen.dbproto.session_request import SessionRequest
from limen.errors import AccessDenied
from limen.events.buffer import AuditBuffer
from limen.events.emitter import MemoryEmitter

HOUR = timedelta(hours=1)
DATABASE = "pg-leaf"
LEAF_DOCS: list[dict[str, Any]] = [
    {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "leaf-dev"},
     "spec": {"allow": {"db_labels": {"env": "leaf"}, "db_users": ["alice"],
                        "db_names": ["app"]}}},
    {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "visitor"},
     "spec": {"allow": {"node_labels": {"*": "*"}}}},
    {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
     "metadata": {"name": DATABASE, "labels": {"env": "leaf"}},
     "spec": {"kind": "db", "protocol": "postgres", "address": "127.0.0.1:5432"}},
]


@pytest.fixture
async def leaf(tmp_path: Path) -> AsyncIterator[Leaf]:
    async with leaf_auth(tmp_path, LEAF_DOCS) as leaf:
        yield leaf


class Agent:
    """The db agent's trust and policy as ``limen start --roles db`` builds them."""

    def __init__(self, leaf: Leaf, creds: HostCredentials, client: AuthClient) -> None:
        self.leaf, self.creds = leaf, creds
        self.trust, self.policy = agent_trust(leaf, client)
        self.emitter = MemoryEmitter()
        self.audit = AuditBuffer(self.emitter)

    async def authorize(self, cert_pem: str, *, now: datetime | None = None) -> Any:
        db = await self.leaf.auth.store.get(Kind.RESOURCE, DATABASE)
        request = SessionRequest(op="connect", protocol="postgres", service=DATABASE,
                                 user_cert=cert_pem, db_user="alice", db_name="app",
                                 session_id="s-1", client_addr="192.0.2.7:50000")
        moment = now or datetime.now(UTC)
        return await authorize(request, db, user_trust(self.creds, self.trust), self.policy,
                               self.audit, self.creds.host_id, lambda: moment, cluster="leaf")

    async def refused(self, cert_pem: str, match: str, **kwargs: Any) -> dict[str, Any]:
        before = len(self.emitter.events)
        with pytest.raises(AccessDenied, match=match):
            await self.authorize(cert_pem, **kwargs)
        [event] = [e.to_dict() for e in self.emitter.events[before:]]
        assert (event["event"], event["success"]) == ("db.session.start", False)
        assert event["db_service"] == DATABASE
        return event

    async def unverified(self, cert_pem: str, **kwargs: Any) -> dict[str, Any]:
        """Refused before anything is decided: the certificate does not verify here."""
        event = await self.refused(cert_pem, ".", **kwargs)
        assert event["reason"].startswith("certificate refused: "), event
        assert "user" not in event or event["user"] in ("", None)
        assert event["cluster"] == "leaf"
        return event


@pytest.fixture
async def agent(leaf: Leaf) -> AsyncIterator[Agent]:
    creds = leaf.service.issue_local_credentials(SystemRole.DB, ["127.0.0.1"])
    async with AuthClient(leaf.service.address, creds) as client:
        agent = Agent(leaf, creds, client)
        assert await agent.trust.refresh()
        try:
            yield agent
        finally:
            await agent.audit.aclose()


def _cert(ca: CertAuthority, *, user: str = "alice", cluster: str = "root",
          roles: tuple[str, ...] = ("ops",), route: str | None = "leaf",
          ttl: timedelta = HOUR) -> str:
    identity = Identity(user, cluster, roles=roles, route_to_cluster=route,
                        route_to_db=RouteToDatabase(DATABASE, "alice", "app"), usage=("db",))
    key = generate_private_key()
    cert = sign_client_cert(ca, key.public_key(), identity, ttl, now=datetime.now(UTC))
    return cert.public_bytes(Encoding.PEM).decode()


async def test_a_root_user_is_verified_against_the_root_ca_and_decided_with_mapped_roles(
        agent: Agent) -> None:
    session = await agent.authorize(_cert(agent.leaf.root_cas[CertAuthorityType.TLS]))
    assert (session.identity.username, session.identity.cluster) == ("alice", "root")
    assert session.role_set.names == ("leaf-dev",)
    await session.emit("db.session.start")
    [event] = [e.to_dict() for e in agent.emitter.events]
    assert (event["success"], event["user"], event["user_cluster"]) == (True, "alice", "root")
    assert event["cluster"] == "leaf"  # written for the leaf: its auth takes no other's


async def test_roles_that_map_to_nothing_are_refused(agent: Agent) -> None:
    tls = agent.leaf.root_cas[CertAuthorityType.TLS]
    for roles in (("guest",), ("dev",)):  # guest maps to a missing role; dev to none
        cert = _cert(tls, roles=roles)
        if roles == ("dev",):
            event = await agent.refused(cert, "not mapped to roles here")
        else:
            event = await agent.refused(cert, "no role's allow.db_labels match")
        assert (event["user"], event["user_cluster"]) == ("alice", "root")
        assert event["cluster"] == "leaf"


async def test_a_cluster_the_leaf_does_not_trust_is_refused(agent: Agent) -> None:
    evil = CertAuthority.generate("evil", CertAuthorityType.TLS)
    await agent.unverified(_cert(evil, cluster="evil"))
    # a certificate claiming the root, signed by another CA
    forged = CertAuthority.generate("root", CertAuthorityType.TLS)
    await agent.unverified(_cert(forged))
    # a certificate claiming the leaf itself, signed by a CA that is not the leaf's
    await agent.unverified(_cert(CertAuthority.generate("leaf", CertAuthorityType.TLS),
                                 cluster="leaf"))


async def test_the_root_database_ca_is_the_wrong_ca_type(agent: Agent) -> None:
    root_db = CertAuthority.generate("root", CertAuthorityType.DB)
    await agent.unverified(_cert(root_db))


async def test_an_expired_root_certificate_is_refused(agent: Agent) -> None:
    cert = _cert(agent.leaf.root_cas[CertAuthorityType.TLS], ttl=timedelta(minutes=5))
    event = await agent.unverified(cert, now=datetime.now(UTC) + timedelta(hours=1))
    assert "expired" in event["reason"]


async def test_a_root_certificate_routed_elsewhere_or_nowhere_is_refused(agent: Agent) -> None:
    tls = agent.leaf.root_cas[CertAuthorityType.TLS]
    event = await agent.refused(_cert(tls, route="other-leaf"), "routed to 'other-leaf'")
    assert event["user"] == "alice"
    await agent.refused(_cert(tls, route=None), "routed to 'root', not 'leaf'")


async def test_once_the_leaf_disables_the_trust_the_root_is_refused(agent: Agent) -> None:
    cert = _cert(agent.leaf.root_cas[CertAuthorityType.TLS])
    await agent.authorize(cert)
    await agent.leaf.trust_root(enabled=False)
    assert await agent.trust.refresh()
    await agent.unverified(cert)
