"""Which kube cluster a kubectl request goes to: the certificate's scope against what the
request names (its path prefix, :mod:`limen.net.kube_path`, or the connection's server name,
:mod:`limen.net.kube_sni`). Pure; called by :mod:`limen.proxy.kube.kube_route` for every
connection (HTTP/1.1) and every HTTP/2 stream.

=====================================  ==========================  ===========================
certificate (``usage: kube``)          the request names nothing   the request names C / K
=====================================  ==========================  ===========================
``route_to_kube: K`` (this cluster)    K                           K when C is this cluster
                                                                   and K is K, else refused
``route_to_kube: K``,                  K of leaf L                 when C is L and K is K,
``route_to_cluster: L``                                            else refused
no ``route_to_kube`` (``lmsh kube      refused: name one           K when C is this cluster;
login --all``)                                                     a leaf's: refused (a leaf
                                                                   needs a certificate routed
                                                                   to it)
=====================================  ==========================  ===========================

A path and a server name naming two different kube clusters are refused. The choice only
routes: whether the user may use the chosen cluster is decided after it, for that cluster
(``kubernetes_labels``, locks, then ``kubernetes_resources`` per request at the agent).
Refusals are :class:`~limen.errors.AccessDenied` with the reason (the caller audits them).
"""

from __future__ import annotations

from dataclasses import dataclass

from limen.ca.identity import Identity
from limen.errors import AccessDenied
from limen.net.kube_path import KubePath

__all__ = ["KubeChoice", "Named", "choose"]


@dataclass(frozen=True)
class Named:
    """What a request names: its path prefix's route and the connection's server name's
    kube cluster (of this cluster), either or both absent."""

    path: KubePath | None = None
    server_name_kube: str | None = None

    def describe(self, local: str) -> str:
        named = self.as_path(local)
        return f"kube cluster {named.kube!r} of cluster {named.cluster!r}" if named else \
            "no kube cluster"

    def as_path(self, local: str) -> KubePath | None:
        if self.path is not None:
            return self.path
        if self.server_name_kube is not None:
            return KubePath(local, self.server_name_kube)
        return None


@dataclass(frozen=True)
class KubeChoice:
    kube: str
    leaf: str = ""
    """The trusted leaf cluster the kube cluster belongs to (empty: this cluster)."""


def choose(identity: Identity, local: str, named: Named) -> KubeChoice:
    """The kube cluster ``identity``'s request naming ``named`` goes to (see the module)."""
    if named.path is not None and named.server_name_kube is not None and \
            named.path != KubePath(local, named.server_name_kube):
        raise AccessDenied(f"the path names kube cluster {named.path.kube!r} of cluster "
                           f"{named.path.cluster!r} but the server name names kube cluster "
                           f"{named.server_name_kube!r}")
    wanted = named.as_path(local)
    scoped = identity.route_to_kube
    leaf = identity.route_to_cluster if identity.route_to_cluster not in (None, local) else ""
    if scoped:
        own = KubeChoice(scoped, leaf or "")
        if wanted is None:
            return own
        asked = KubeChoice(wanted.kube, "" if wanted.cluster == local else wanted.cluster)
        if asked != own:
            raise AccessDenied(
                f"this certificate is for kube cluster {scoped!r} of cluster "
                f"{leaf or local!r}, not {named.describe(local)}: run lmsh kube login "
                f"{wanted.kube}" + (f" --cluster {wanted.cluster}" if asked.leaf else ""))
        return own
    if wanted is None:
        raise AccessDenied("this certificate names no kube cluster and neither does the "
                           "request: use the kubeconfig lmsh kube login writes (its server "
                           "URL names the kube cluster)")
    if wanted.cluster != local:
        raise AccessDenied(f"kube cluster {wanted.kube!r} of cluster {wanted.cluster!r} needs "
                           f"a certificate routed there: run lmsh kube login --cluster "
                           f"{wanted.cluster} {wanted.kube}")
    return KubeChoice(wanted.kube)
