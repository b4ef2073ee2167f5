"""Attacks on a leaf's kube agent with the trust and the audit path of an agent apart from
auth: the leaf's real ``AuthService`` (its ``GET /v1/trust/roots`` and ``POST /v1/events``
over mutual TLS with the agent's credentials), a ``RemoteTrustCache`` polled by the agent,
``limen.agents.root_users.user_trust`` and a ``StoreAccessPolicy`` mapping roles with the
trust's role_map, the agent's events queued in an ``AuditOutbox`` that forwards them to the
leaf's auth, as ``limen start --roles kube`` wires them; the agent's :func:`open_session`
and :meth:`KubeSession.decide` decide. The leaf and its role_map: ``leaf_trust_env``.

* the bug: a refused certificate's event named no cluster, the leaf's auth refused it and
  every later event of the agent stayed in its outbox. Now a refusal, then a served request:
  both reach the leaf's auth, written for the leaf;
* a root user's kube certificate (signed by the root's TLS CA, routed to the leaf) with roles
  the role_map maps is accepted, impersonated with the mapped role's groups, and audited at
  the leaf with ``user_cluster`` root;
* each of these is refused with its reason and a failed ``kube.request`` at the leaf's auth:
  roles mapping to nothing or to a missing role, a certificate of a cluster the leaf does not
  trust, one claiming the root but signed by another CA, one signed by the root's database CA
  (the wrong CA type), an expired one (at the connection and on a kept-alive connection), one
  routed to another cluster or to none, and any once the leaf disables the trust.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from leaf_trust_env import Leaf, agent_trust, leaf_auth

from limen.agents.audit_outbox import AuditOutbox
from limen.agents.kube.session import KubeSession, open_session
from limen.agents.root_users import user_trust
from limen.api.resources import Kind, Resource
from limen.auth.client import AuthClient
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key
from limen.ca.x509_certs import sign_client_cert
from limen.errors import AccessDenied
from limen.events.buffer import AuditBuffer
from limen.rbac.kube_request import request_info
from limen.tunnel.kube_wire import KubeConnect

HOUR = timedelta(hours=1)
KUBE = "emu-leaf"
PODS = request_info("GET", "/api/v1/namespaces/default/pods")
LEAF_ROLES: list[dict[str, Any]] = [
    {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "leaf-dev"},
     "spec": {"allow": {"kubernetes_labels": {"env": "leaf"},
                        "kubernetes_groups": ["developers"],
                        "kubernetes_resources": [{"kind": "pod", "namespace": "default",
                                                  "verbs": ["*"]}]}}},
    {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "visitor"},
     "spec": {"allow": {"node_labels": {"*": "*"}}}},
]
CLUSTER = Resource(Kind.RESOURCE, KUBE, spec={"kind": "kube"}, labels={"env": "leaf"})


@pytest.fixture
async def leaf(tmp_path: Path) -> AsyncIterator[Leaf]:
    async with leaf_auth(tmp_path / "leaf", LEAF_ROLES) as leaf:
        yield leaf


def _kube_requests(leaf: Leaf) -> list[dict[str, Any]]:
    return [e.to_dict() for e in leaf.events.events if e.type == "kube.request"]


class Agent:
    """The kube agent's trust, policy and audit path as ``limen start --roles kube`` builds
    them: events go to the leaf's auth only through the outbox."""

    def __init__(self, leaf: Leaf, creds: HostCredentials, client: AuthClient,
                 outbox_dir: Path) -> None:
        self.leaf, self.creds = leaf, creds
        self.trust, self.policy = agent_trust(leaf, client)

        async def give() -> AuthClient:
            return client

        self.outbox = AuditOutbox(outbox_dir, give)
        self.audit = AuditBuffer(self.outbox)

    async def open(self, cert_pem: str, *, now: datetime | None = None) -> KubeSession:
        moment = now or datetime.now(UTC)
        return await open_session(KubeConnect(KUBE, cert_pem, "192.0.2.7:50000", "s-1"),
                                  CLUSTER, user_trust(self.creds, self.trust), self.policy,
                                  self.audit, self.creds.host_id, lambda: moment,
                                  cluster_name=self.creds.cluster)

    async def request(self, session: KubeSession) -> Any:
        """One request decided and audited as the agent's ``_one`` does (served: 200)."""
        try:
            who = await session.decide(PODS)
        except AccessDenied as err:
            await session.audit(PODS, None, status=403, success=False, reason=str(err))
            raise
        await session.audit(PODS, None, status=200, success=True, impersonation=who)
        return who

    async def delivered(self) -> list[dict[str, Any]]:
        """The agent's events once its outbox handed them to the leaf's auth (raises what
        auth answered when it refuses them)."""
        await self.audit.flush()
        await self.outbox.flush()
        return _kube_requests(self.leaf)

    async def refused(self, cert_pem: str, match: str, **kwargs: Any) -> dict[str, Any]:
        before = len(await self.delivered())
        with pytest.raises(AccessDenied, match=match):
            await self.request(await self.open(cert_pem, **kwargs))
        [event] = (await self.delivered())[before:]
        assert (event["success"], event["kube_cluster"]) == (False, KUBE)
        assert event["cluster"] == "leaf"  # written for the leaf: its auth takes no other's
        return event

    async def unverified(self, cert_pem: str, **kwargs: Any) -> dict[str, Any]:
        """Refused before anything is decided: the certificate does not verify here."""
        event = await self.refused(cert_pem, ".", **kwargs)
        assert event["reason"].startswith("certificate refused: "), event
        assert event.get("user") in ("", None)
        assert "user_cluster" not in event
        return event


@pytest.fixture
async def agent(leaf: Leaf, tmp_path: Path) -> AsyncIterator[Agent]:
    creds = leaf.service.issue_local_credentials(SystemRole.KUBE, ["127.0.0.1"])
    async with AuthClient(leaf.service.address, creds) as client:
        agent = Agent(leaf, creds, client, tmp_path / "outbox")
        assert await agent.trust.refresh()
        try:
            yield agent
        finally:
            await agent.audit.aclose()
            await agent.outbox.stop()


def _cert(ca: CertAuthority, *, user: str = "alice", cluster: str = "root",
          roles: tuple[str, ...] = ("ops",), route: str | None = "leaf",
          ttl: timedelta = HOUR) -> str:
    identity = Identity(user, cluster, roles=roles, route_to_cluster=route,
                        route_to_kube=KUBE, usage=("kube",))
    key = generate_private_key()
    cert = sign_client_cert(ca, key.public_key(), identity, ttl, now=datetime.now(UTC))
    return cert.public_bytes(Encoding.PEM).decode()


async def test_a_refused_certificate_does_not_block_the_agents_later_events(
        agent: Agent) -> None:
    evil = CertAuthority.generate("evil", CertAuthorityType.TLS)
    with pytest.raises(AccessDenied, match="certificate"):
        await agent.open(_cert(evil, cluster="evil"))
    served = await agent.open(_cert(agent.leaf.root_cas[CertAuthorityType.TLS]))
    await agent.request(served)
    refusal, request = await agent.delivered()  # auth took the refusal, then the request
    assert (refusal["success"], refusal["cluster"]) == (False, "leaf")
    assert (request["success"], request["cluster"], request["response_code"]) == (
        True, "leaf", 200)
    assert agent.outbox.forwarded == 2


async def test_a_root_user_is_verified_against_the_root_ca_and_decided_with_mapped_roles(
        agent: Agent) -> None:
    session = await agent.open(_cert(agent.leaf.root_cas[CertAuthorityType.TLS]))
    assert (session.identity.username, session.identity.cluster) == ("alice", "root")
    who = await agent.request(session)
    assert (who.user, who.groups) == ("alice", ("developers",))  # leaf-dev's, mapped
    [event] = await agent.delivered()
    assert (event["success"], event["user"], event["user_cluster"]) == (True, "alice", "root")
    assert event["cluster"] == "leaf"
    assert (event["kubernetes_user"], event["kubernetes_groups"]) == ("alice", ["developers"])
    assert event["server_id"] == agent.creds.host_id  # auth names the agent that handed it


async def test_roles_that_map_to_nothing_are_refused(agent: Agent) -> None:
    tls = agent.leaf.root_cas[CertAuthorityType.TLS]
    reasons = {("dev",): "not mapped to roles here",  # in no role_map entry
               ("guest",): "kubernetes_labels",  # mapped to a role the leaf does not have
               ("tourist",): "kubernetes_labels"}  # mapped to a role with no kube access
    for roles, reason in reasons.items():
        event = await agent.refused(_cert(tls, roles=roles), reason)
        assert (event["user"], event["user_cluster"]) == ("alice", "root")
        assert event["response_code"] == 403


async def test_a_cluster_the_leaf_does_not_trust_is_refused(agent: Agent) -> None:
    evil = CertAuthority.generate("evil", CertAuthorityType.TLS)
    await agent.unverified(_cert(evil, cluster="evil"))
    # a certificate claiming the root, signed by another CA
    await agent.unverified(_cert(CertAuthority.generate("root", CertAuthorityType.TLS)))
    # a certificate claiming the leaf itself, signed by a CA that is not the leaf's
    await agent.unverified(_cert(CertAuthority.generate("leaf", CertAuthorityType.TLS),
                                 cluster="leaf"))


async def test_the_root_database_ca_is_the_wrong_ca_type(agent: Agent) -> None:
    await agent.unverified(_cert(CertAuthority.generate("root", CertAuthorityType.DB)))


async def test_an_expired_root_certificate_is_refused(agent: Agent) -> None:
    cert = _cert(agent.leaf.root_cas[CertAuthorityType.TLS], ttl=timedelta(minutes=5))
    event = await agent.unverified(cert, now=datetime.now(UTC) + HOUR)
    assert "expired" in event["reason"]
    # a connection opened in time and kept alive past the expiry
    session = await agent.open(cert)
    session.now = lambda: datetime.now(UTC) + HOUR
    with pytest.raises(AccessDenied, match="expired"):
        await agent.request(session)
    last = (await agent.delivered())[-1]
    assert (last["success"], last["user_cluster"], last["cluster"]) == (False, "root", "leaf")


async def test_a_root_certificate_routed_elsewhere_or_nowhere_is_refused(agent: Agent) -> None:
    tls = agent.leaf.root_cas[CertAuthorityType.TLS]
    event = await agent.refused(_cert(tls, route="other-leaf"), "routed to 'other-leaf'")
    assert (event["user"], event["user_cluster"]) == ("alice", "root")
    await agent.refused(_cert(tls, route=None), "routed to 'root', not 'leaf'")


async def test_once_the_leaf_disables_the_trust_the_root_is_refused(agent: Agent) -> None:
    cert = _cert(agent.leaf.root_cas[CertAuthorityType.TLS])
    await agent.request(await agent.open(cert))
    await agent.leaf.trust_root(enabled=False)
    assert await agent.trust.refresh()
    await agent.unverified(cert)
