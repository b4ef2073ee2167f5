"""Cluster links: the reverse tunnels that leaf clusters' proxies dial to a root's tunnel port.

::

    leaf proxy ──SSH control conn──▶ root TunnelServer (tunnel port, shared with agents)
      hello {host cert of the LEAF cluster, role proxy}
        cert claims this cluster ──▶ the agent path (this cluster's host CA, agent roles)
        cert claims cluster C    ──▶ RemoteTrust(C): the host CA keys of C the root stored at
                                     the trusted-cluster handshake (unknown C: refused)
                                     verify_peer_host_cert(cert, key, {C: keys}, {proxy})
      ◀── welcome {root proxy host cert}    (the leaf checks it against the root's host CA)
      ── heartbeat {nodes: [...]} ─────────▶  ClusterRegistry; forwarded to root auth (the
                                              RemoteCluster goes online, lmsh ls --cluster)
      ◀── dial {target, user cert} ─────────  root users' sessions, routed by the root proxy
      ◀── locks {revision, items} ──────────  the root's locks on users, roles and logins (not
                                              nodes), at welcome, on change, as a keepalive:
                                              the leaf enforces them on root users
      ◀── cas {update} ─────────────────────  the root's public CAs (user, host, TLS), signed
                                              by the root proxy's host key, at welcome and on
                                              change: the leaf's auth checks and stores them
                                              (limen.auth.trusted_clusters.ca_update)
      ── connect / dial / anything else ───▶  REFUSED, audited (access.denied), link dropped

A leaf never asks the root for anything: a cluster link cannot reach the root's auth API, the
root's nodes or other leaves; only the root dials through it. Because the verifier only gets
``{C: C's host CA}``, a certificate signed by one cluster and claiming another is refused in
both directions (a leaf's certificate claiming the root, or the root's claiming a leaf).

Links are keyed ``@<cluster>`` in the tunnel server's nonce table (``@`` never starts an agent
host id). Called by :mod:`limen.tunnel.control` and :mod:`limen.tunnel.server`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from limen.ca.identity import Identity
from limen.ca.keys import PublicKey
from limen.ca.ssh_certs import IDENTITY_EXTENSION, parse_ssh_cert
from limen.errors import LimenError
from limen.tunnel.registry import Registry

__all__ = [
    "ClusterRecord",
    "ClusterRegistry",
    "RemoteTrust",
    "claimed_cluster",
    "link_key",
    "parse_nodes",
]

RemoteTrust = Callable[[str], Awaitable[Sequence[PublicKey]]]
"""``cluster -> host CA keys`` of a leaf this cluster admitted; raises a :class:`LimenError`
(NotFound, AccessDenied) for a cluster it does not know or no longer trusts."""

MAX_NODES = 2000
"""Largest node list a leaf's heartbeat may carry."""
_NODE_FIELDS = ("name", "hostname", "host_id")


def link_key(cluster: str) -> str:
    """The key of a cluster link where agents are keyed by host id."""
    return f"@{cluster}"


def claimed_cluster(cert: str) -> str:
    """The cluster a host certificate's identity CLAIMS, unverified ("" when unreadable).
    Only chooses which CA verifies it; the verifier then checks the claim against the CA."""
    try:
        data = parse_ssh_cert(cert).extensions.get(IDENTITY_EXTENSION.encode())
        return Identity.from_json(data).cluster if data is not None else ""
    except (LimenError, ValueError, TypeError):
        return ""


def parse_nodes(payload: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """The node list of a leaf's heartbeat, reduced to names and string labels."""
    raw = payload.get("nodes")
    if not isinstance(raw, list):
        return ()
    nodes = []
    for item in raw[:MAX_NODES]:
        if not isinstance(item, Mapping):
            continue
        node: dict[str, Any] = {k: str(item[k])[:256] for k in _NODE_FIELDS
                                if isinstance(item.get(k), str)}
        labels = item.get("labels")
        node["labels"] = ({str(k)[:256]: str(v)[:256] for k, v in labels.items()
                           if isinstance(v, str)} if isinstance(labels, Mapping) else {})
        if node.get("name"):
            nodes.append(node)
    return tuple(nodes)


@dataclass(frozen=True)
class ClusterRecord:
    cluster: str
    """The leaf cluster, from the verified certificate."""
    proxy_id: str
    """Host id of the leaf proxy holding the link."""
    address: str
    """``host:port`` the control connection came from."""
    connected_at: datetime
    last_heartbeat: datetime | None = None
    nodes: tuple[Mapping[str, Any], ...] = field(default=())
    """The leaf's nodes, as its last heartbeat listed them."""

    def with_heartbeat(self, payload: Mapping[str, Any], when: datetime) -> ClusterRecord:
        return replace(self, last_heartbeat=when, nodes=parse_nodes(payload))


class ClusterRegistry(Registry[ClusterRecord]):
    """Connected cluster links by leaf cluster name (read-only for readers)."""

    def __init__(self) -> None:
        super().__init__(lambda record: record.cluster)
