"""Helpers of the tests of a cluster's CA update at the other end of a trusted-cluster pair
(test_trust_root_cas*.py, test_trust_leaf_own_cas*.py): a cluster's host credentials and
public CAs, a leaf holding the root's CAs and a root holding a leaf's, as the trusted-cluster
handshake stores them."""

from __future__ import annotations

from limen.api.resources import Kind, Resource
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.leaf_roots import TRUST_TRUSTED_CLUSTER, TRUSTED_CLUSTER_LABEL
from limen.auth.trusted_clusters.wire import CLUSTER_LABEL, TRUST_LABEL, TRUST_REMOTE, CASet
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.services.resource_store import ResourceStore

TYPES = (CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.TLS)


def host_credentials(server: AuthServer, role: SystemRole, host_id: str) -> HostCredentials:
    """Host credentials of ``role`` issued by ``server`` (as at a join)."""
    key, ssh_key = generate_private_key("ecdsa-p256"), generate_private_key()
    certs = server.issue_host_certs(host_id, host_id, role,
                                    public_key_to_openssh(key.public_key()), ["localhost"],
                                    ssh_public_key=public_key_to_openssh(ssh_key.public_key()))
    return HostCredentials(
        cluster=server.cluster_name, host_id=host_id, role=role.value,
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
        tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert,
        ssh_key_pem=private_key_to_pem(ssh_key).encode())


def public_cas(server: AuthServer) -> dict[CertAuthorityType, CertAuthority]:
    return {t: server.authorities.get(t).public_only() for t in TYPES}


def with_new_user_key(root: AuthServer) -> tuple[CASet, str]:
    """The root's CAs with a second user key (a rotation's init); the new key's line."""
    cas = public_cas(root)
    new = CertAuthority.generate(root.cluster_name, CertAuthorityType.USER).public_only()
    user = cas[CertAuthorityType.USER]
    cas[CertAuthorityType.USER] = CertAuthority(root.cluster_name, CertAuthorityType.USER,
                                                user.active, (new.active,))
    return CASet.of(cas), new.active.ssh_public_key


async def trust_root(leaf: ResourceStore, root: AuthServer) -> None:
    """A TrustedCluster named after ``root`` and its CAs in the leaf's store."""
    name = root.cluster_name
    await leaf.create(Resource(Kind.TRUSTED_CLUSTER, name, spec={
        "enabled": True, "proxy_address": f"{name}.example:3080",
        "token_secret_ref": {"file": f"{name}.token"}}))
    for ca in public_cas(root).values():
        await leaf.create(Resource(
            Kind.CERT_AUTHORITY, ca_resource_name(ca.type, name), spec=ca.to_dict(),
            labels={CLUSTER_LABEL: name, TRUST_LABEL: TRUST_TRUSTED_CLUSTER,
                    TRUSTED_CLUSTER_LABEL: name}))


async def admit_leaf(root: AuthServer, leaf: AuthServer) -> None:
    """What ``root`` stores at the trusted-cluster handshake of ``leaf``: its RemoteCluster
    and its public CAs."""
    name = leaf.cluster_name
    await root.store.create(Resource(Kind.REMOTE_CLUSTER, name,
                                     spec={"connection": "offline", "last_heartbeat": None}))
    for ca in public_cas(leaf).values():
        await root.store.create(Resource(
            Kind.CERT_AUTHORITY, ca_resource_name(ca.type, name), spec=ca.to_dict(),
            labels={CLUSTER_LABEL: name, TRUST_LABEL: TRUST_REMOTE}))
