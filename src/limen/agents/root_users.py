"""Users of trusted root clusters at a leaf's db and kube agents: the CAs their certificates
are verified against, and the route their certificates must name.

A root user's session reaches a leaf's agent through the leaf's proxy, which has verified the
certificate against the root's TLS CA and mapped its roles
(``limen.proxy.trust_leaf_resources``). The agent verifies it again: :func:`user_trust` is
what the agent's ``user_trust`` returns, this cluster's TLS CA and the TLS CA of every root
the leaf trusts now, by cluster name. A certificate verifies only against the CAs of the
cluster it names (:func:`limen.ca.x509_certs.verify_client_cert`), so a root's CA cannot sign
for this cluster or another root, and a cluster the leaf does not trust (or no longer does)
verifies nowhere. The agent's access policy maps the roles with the trust's ``role_map``
(``limen.trust.cache.trusted_role_map``) and refuses a user whose roles map to none.
:func:`require_routed_here` is the agents' check that a certificate of another cluster than
theirs is routed to theirs (a root's certificate for another leaf is refused here).

``trusted`` is a :class:`~limen.trust.cache.TrustView`: the ``TrustCache`` of auth's
process, or the ``RemoteTrustCache`` an agent apart from auth polls; it is read at each
session. Called by ``limen.cli.compose`` (the db and kube agents in auth's process) and
``limen.cli.compose_remote`` (``limen start --roles db|kube`` apart from auth);
:func:`require_routed_here` by ``limen.agents.db.session`` and ``limen.agents.kube.session``.
"""

from __future__ import annotations

from cryptography import x509

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity
from limen.errors import AccessDenied
from limen.trust.cache import TrustView

__all__ = ["require_routed_here", "user_trust"]


def user_trust(creds: HostCredentials, trusted: TrustView) -> dict[str, list[x509.Certificate]]:
    """``cluster -> TLS CA certificates``: every trusted root's, and this cluster's own (which
    no root's entry can replace)."""
    trust = {root.root_cluster: list(root.tls_ca.trusted_certificates())
             for root in trusted.roots.values() if root.tls_ca is not None}
    return {**trust, creds.cluster: creds.tls_cas()}


def require_routed_here(identity: Identity, cluster: str) -> None:
    """AccessDenied unless the (verified) certificate's user is of ``cluster`` (the agent's)
    or the certificate is routed to ``cluster``."""
    if identity.cluster != cluster and identity.route_to_cluster != cluster:
        raise AccessDenied(f"the certificate of cluster {identity.cluster!r} is routed "
                           f"to {identity.route_to_cluster or identity.cluster!r}, "
                           f"not {cluster!r}")
