"""Attacks on the leaf proxy's door for root users' database and kube connections, each
refused AND audited (``access.denied`` with ``user_cluster``), in process.

Real CAs and certificates (the root's TLS CA that the leaf's TrustedCluster admitted, an
attacker's CA claiming the root's name, the leaf's own CA) and the real
:class:`~limen.proxy.trust_leaf_resources.LeafResourceDials` with the dial requests the root's
proxy sends over the cluster link; the leaf's trust is a fixed view of that one root (role_map
``ops`` -> ``leaf-dev``). Every attack stops before a router is asked: the control (a valid
certificate) gets past every check to the routers, of which this leaf has none ("serves no db
access"), which is audited too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, RouteToDatabase, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem
from limen.ca.x509_certs import sign_client_cert
from limen.errors import AccessDenied, NotFound
from limen.proxy.trust_leaf_resources import LeafResourceDials
from limen.trust.cache import TrustedRoot
from limen.trust.rolemap import compile_role_map, map_roles
from limen.trust.root_locks import RootLocks
from limen.tunnel.protocol import KIND_DB, KIND_KUBE, MODE_TLS, DialRequest

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
ROOT_TLS = CertAuthority.generate("root", CertAuthorityType.TLS, now=NOW - timedelta(days=1))
FORGED_TLS = CertAuthority.generate("root", CertAuthorityType.TLS, now=NOW - timedelta(days=1))
LEAF_TLS = CertAuthority.generate("leaf", CertAuthorityType.TLS, now=NOW - timedelta(days=1))


class _Trust:
    """The leaf's view of its one trusted root (what the TrustCache holds after the trust
    handshake): the root's CAs and the compiled role_map."""

    def __init__(self) -> None:
        self.root = TrustedRoot(
            trusted_cluster="root", root_cluster="root",
            user_ca=CertAuthority.generate("root", CertAuthorityType.USER).public_only(),
            role_map=compile_role_map([{"remote": "ops", "local": ["leaf-dev"]}]),
            tls_ca=ROOT_TLS.public_only())

    @property
    def roots(self) -> Mapping[str, TrustedRoot]:
        return {"root": self.root}

    def user_cas(self) -> list[CertAuthority]:
        return [self.root.user_ca]

    def role_names(self, identity: Identity) -> list[str]:
        if identity.cluster != "root":
            return []
        return map_roles(identity.roles, self.root.role_map)

    async def wait_changed(self, within: float | None = None) -> bool:
        await asyncio.sleep(0)
        return False


def _leaf_proxy() -> HostCredentials:
    key = generate_private_key()
    cert = sign_client_cert(LEAF_TLS, key.public_key(), Identity(
        username="proxy-1", cluster="leaf", system_role=SystemRole.PROXY, host_id="proxy-1"),
        timedelta(hours=1), now=NOW)
    return HostCredentials(cluster="leaf", host_id="proxy-1", role="proxy",
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=cert.public_bytes(Encoding.PEM),
                           tls_ca_pem=LEAF_TLS.pem_bundle().encode())


def _cert(ca: CertAuthority = ROOT_TLS, *, cluster: str = "root", route: str = "leaf",
          roles: tuple[str, ...] = ("ops",), usage: tuple[str, ...] = ("db",),
          service: str = "pg-main", system: bool = False, issued: datetime = NOW) -> str:
    identity = Identity(
        username="proxy-x" if system else "alice", cluster=cluster, roles=roles,
        system_role=SystemRole.PROXY if system else None, host_id="proxy-x" if system else None,
        usage=usage, route_to_cluster=route,
        route_to_db=RouteToDatabase(service, "alice", "app") if "db" in usage else None,
        route_to_kube=service if "kube" in usage else None)
    cert = sign_client_cert(ca, generate_private_key().public_key(), identity,
                            timedelta(hours=1), now=issued)
    return cert.public_bytes(Encoding.PEM).decode()


def _dials(audit: list[dict[str, Any]]) -> LeafResourceDials:
    async def record(user: str | None, **fields: Any) -> None:
        audit.append({"user": user, **fields})

    creds = _leaf_proxy()
    return LeafResourceDials(_Trust(), lambda: creds, lambda: (None, None), RootLocks(),
                             record, now=lambda: NOW)


def _dial(cert: str, kind: str = KIND_DB, target: str = "pg-main") -> DialRequest:
    return DialRequest(kind=kind, target=target, mode=MODE_TLS, client_addr="192.0.2.7:4000",
                       user="alice", session_id="s-1", cert=cert)


ATTACKS = {
    "routed to another cluster": (_dial(_cert(route="other-leaf")),
                                  "routed to cluster 'other-leaf', not 'leaf'"),
    "signed by a CA that claims the root's name": (_dial(_cert(FORGED_TLS)),
                                                   "signature is invalid"),
    "a leaf user's certificate": (_dial(_cert(LEAF_TLS, cluster="leaf")),
                                  "not issued by a trusted CA"),
    "a certificate of the root's proxy": (_dial(_cert(system=True)), "Limen process"),
    "a database certificate for a kube cluster": (
        _dial(_cert(), KIND_KUBE, "pg-main"), "not for kube access"),
    "a certificate for another database": (_dial(_cert(), target="pg-prod"),
                                           "for 'pg-main', not 'pg-prod'"),
    "expired": (_dial(_cert(issued=NOW - timedelta(hours=2))), "expired"),
    "roles that map to nothing": (_dial(_cert(roles=("guest",))), "map to no role"),
    "no certificate": (_dial(""), "no user certificate"),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
async def test_refused_and_audited(attack: str) -> None:
    request, reason = ATTACKS[attack]
    audit: list[dict[str, Any]] = []
    with pytest.raises(AccessDenied, match=reason):
        await _dials(audit).prepare("root", request)
    [event] = audit
    assert event["user_cluster"] == "root"
    assert event["action"] == request.kind
    assert event["session_id"] == "s-1"
    assert reason in event["reason"]


async def test_a_valid_certificate_passes_every_check() -> None:
    audit: list[dict[str, Any]] = []
    with pytest.raises(NotFound, match="serves no db access"):
        await _dials(audit).prepare("root", _dial(_cert()))
    [event] = audit
    assert event["user"] == "alice"
    assert event["roles"] == ["leaf-dev"]  # verified and mapped before the routers
