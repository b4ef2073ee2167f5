"""The auth API of the Cluster an operator deploys, for its User/Role/TrustedCluster/Resource
objects when no auth address is configured (no ``LIMEN_AUTH_ADDRESS``/``--auth``, no
``--data-dir``).

::

    Cluster reconciled ──▶ DeployedClusters.record(uid, "ns/name", auth_address(body), TLS CA)
    Cluster deleted    ──▶ DeployedClusters.forget(uid)
    LimenAuth connects ──▶ DeployedClusters.endpoint()
                             exactly one Cluster: <name>-auth.<ns>.svc:3025, and an admin
                             identity (user limen-operator) signed in memory by that Cluster's
                             TLS CA (from its CA Secret), renewed at half its lifetime
                             none, or several: ConnectionProblem saying what to set

So the base manifests need no auth address and no identity Secret for a Cluster the operator
deploys, whatever its name and namespace. Called by ``limen.operator.context`` (the shared
state), ``limen.operator.cluster`` (record/forget) and ``limen.operator.rotation_forward``
(``endpoint_of``: the auth of one Cluster, to forward its ``spec.rotation``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509

from limen.ca.authority import CertAuthority
from limen.ca.host_credentials import HostCredentials
from limen.errors import ConnectionProblem
from limen.operator.auth import Endpoint
from limen.operator.ca_secret import operator_identity

__all__ = ["IDENTITY_TTL", "DeployedCluster", "DeployedClusters"]

IDENTITY_TTL = timedelta(hours=24)
"""Lifetime of the operator's identity for a deployed Cluster (signed again at half of it)."""


@dataclass(frozen=True)
class DeployedCluster:
    name: str
    """``namespace/name`` of the Cluster object."""
    address: str
    """Its auth API, ``<name>-auth.<namespace>.svc:3025``."""
    tls_ca: CertAuthority


class DeployedClusters:
    """The Clusters this operator deployed (in memory: filled again as they are resumed)."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._clusters: dict[str, DeployedCluster] = {}
        self._identity: tuple[tuple[str, str], HostCredentials, datetime] | None = None
        """(address, TLS CA pin) it was signed for, the identity, when to sign again."""

    def record(self, uid: str, cluster: DeployedCluster) -> None:
        self._clusters[uid] = cluster

    def forget(self, uid: str) -> None:
        self._clusters.pop(uid, None)

    def names(self) -> list[str]:
        return sorted(c.name for c in self._clusters.values())

    def endpoint(self) -> Endpoint:
        """The auth of the one deployed Cluster and an identity for it (ConnectionProblem when
        there is no Cluster, or more than one, to choose from)."""
        if not self._clusters:
            raise ConnectionProblem(
                "no auth API: LIMEN_AUTH_ADDRESS (--auth) is not set and this operator has "
                "deployed no Cluster yet")
        if len(self._clusters) > 1:
            raise ConnectionProblem(
                f"this operator deploys several Clusters ({', '.join(self.names())}): set "
                "LIMEN_AUTH_ADDRESS and LIMEN_OPERATOR_IDENTITY to choose the one its "
                "User, Role, TrustedCluster and Resource objects go to, or run one operator "
                "per Cluster (LIMEN_OPERATOR_ID)")
        [cluster] = self._clusters.values()
        return Endpoint(cluster.address, self._credentials(cluster))

    def endpoint_of(self, uid: str) -> Endpoint:
        """The auth of the deployed Cluster ``uid`` and an identity for it (ConnectionProblem
        while it is not deployed, or no longer)."""
        cluster = self._clusters.get(uid)
        if cluster is None:
            raise ConnectionProblem("this Cluster is not deployed (yet): its auth cannot be "
                                    "reached")
        return Endpoint(cluster.address, self._credentials(cluster))

    def _credentials(self, cluster: DeployedCluster) -> HostCredentials:
        now = self._clock()
        key = (cluster.address, cluster.tls_ca.fingerprint)  # a rotation signs again
        if self._identity is not None:
            signed_for, credentials, renew_at = self._identity
            if signed_for == key and now < renew_at:
                return credentials
        credentials = operator_identity(cluster.tls_ca, IDENTITY_TTL, now=now)
        cert = x509.load_pem_x509_certificate(credentials.tls_cert_pem)
        start = cert.not_valid_before_utc
        renew_at = start + (cert.not_valid_after_utc - start) / 2
        self._identity = (key, credentials, renew_at)
        return credentials
