"""The leaf's auth applies a root's CA update: checked, then stored in place of the root's CAs.

::

    POST /v1/trust/roots/{root}/cas  (the leaf proxy, relaying the root proxy's ``cas``
                                      message from its cluster link to root)
      └─▶ apply_root_cas(auth, root, update)
            the root's stored CAs user/host/tls.<root> (limen.dev/trust: trusted-cluster), its
            TrustedCluster enabled, else refused
            check_update (limen.auth.trusted_clusters.ca_update): the link's root, signed by
            a proxy of the root whose host certificate the stored host CA verifies
            same keys ─▶ nothing written (an older copy of the current set is harmless)
            older than the last update applied ─▶ refused (a replay)
            else ─▶ the three CAs replaced in ONE compare-and-swap transaction (the spec's
                    ``disabled`` kept, ``issued_at`` recorded), audited trusted_cluster.cas
      any refusal ─▶ nothing changes (the previous set stays), a log line, and an audit event
                     trusted_cluster.cas with success false and the reason

Every reader then follows the store: the auth process's ``TrustCache`` (refreshed by the
reconciler's watch of CertAuthority resources, ``limen.trust.reconciler``) and the processes
apart from auth through ``GET /v1/trust/roots`` (``limen.trust.roots_poller``, every 3 s).
Called by the auth API route (``limen.auth.http.trust_leaf``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes

from limen.api.resources import Kind, Resource
from limen.auth.authorities import ca_resource_name
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.ca_update import CheckedUpdate, check_update
from limen.auth.trusted_clusters.leaf_roots import (
    TRUST_TRUSTED_CLUSTER,
    TRUSTED_CLUSTER_LABEL,
    is_enabled,
)
from limen.auth.trusted_clusters.wire import TRUST_LABEL
from limen.backend.base import Condition, Put
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.keys import ssh_fingerprint
from limen.errors import AccessDenied, BadParameter, CompareFailed
from limen.services.resource_store import encode, resource_key

__all__ = ["EVENT", "ISSUED_AT", "apply_root_cas"]

log = logging.getLogger(__name__)

EVENT = "trusted_cluster.cas"
ISSUED_AT = "issued_at"
"""Spec field of a stored root CA: ``issued_at`` of the update that wrote it (unix ms)."""
_TYPES = (CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.TLS)


async def apply_root_cas(auth: AuthServer, root: str, update: Any, *,
                         relayed_by: str = "") -> bool:
    """Check and store root ``root``'s CA update (see the module doc); True when the stored
    CAs changed. :class:`AccessDenied` or :class:`BadParameter` (audited) when refused."""
    try:
        stored = await _stored(auth, root)
        keys = CertAuthority.from_dict(stored[CertAuthorityType.HOST].spec).trusted_public_keys()
        last = max(_issued_at(r) for r in stored.values())
        checked = check_update(update, root, keys, auth.now())
        changed = await _store(auth, stored, checked, last)
    except (AccessDenied, BadParameter) as err:
        log.warning("trusted root %s: CA update refused, the previous CAs are kept: %s", root,
                    err)
        await auth.emit(EVENT, success=False, root_cluster=root, reason=str(err),
                        proxy=relayed_by)
        raise
    if changed:
        log.info("trusted root %s: CAs updated (signed by %s): %s", root, checked.signer,
                 _keys_summary(changed))
        await auth.emit(EVENT, success=True, root_cluster=root, signer=checked.signer,
                        proxy=relayed_by, **changed)
    return bool(changed)


async def _stored(auth: AuthServer, root: str) -> dict[CertAuthorityType, Resource]:
    """The root's stored CAs, all three, while its TrustedCluster is enabled."""
    found: dict[CertAuthorityType, Resource] = {}
    for ca_type in _TYPES:
        res = await auth.store.find(Kind.CERT_AUTHORITY, ca_resource_name(ca_type, root))
        if res is None or res.labels.get(TRUST_LABEL) != TRUST_TRUSTED_CLUSTER:
            raise AccessDenied(f"cluster {root!r} is not a trusted root here")
        found[ca_type] = res
    owners = {r.labels.get(TRUSTED_CLUSTER_LABEL, "") for r in found.values()}
    trusted = await auth.store.find(Kind.TRUSTED_CLUSTER, owners.pop()) \
        if len(owners) == 1 else None
    if trusted is None or not is_enabled(trusted) or \
            any(r.spec.get("disabled") for r in found.values()):
        raise AccessDenied(f"root cluster {root!r} is not trusted here while its "
                           "TrustedCluster is disabled or gone")
    return found


def _issued_at(resource: Resource) -> int:
    value = resource.spec.get(ISSUED_AT)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


async def _store(auth: AuthServer, stored: Mapping[CertAuthorityType, Resource],
                 checked: CheckedUpdate, last_issued_at: int) -> dict[str, Any]:
    """Replace the changed CAs in one transaction; what changed, per type (empty: nothing)."""
    new = {ca.type: ca for ca in checked.cas.authorities(checked.cluster)}
    changes: dict[str, Any] = {}
    conditions, puts = [], []
    for ca_type, res in stored.items():
        key = resource_key(Kind.CERT_AUTHORITY, res.name)
        conditions.append(Condition(key, res.revision))
        old = CertAuthority.from_dict(res.spec)
        before, after = _keys(old), _keys(new[ca_type])
        if before != after:
            changes[ca_type.value] = {"added": sorted(set(after) - set(before)),
                                      "removed": sorted(set(before) - set(after))}
        spec = {**new[ca_type].to_dict(), ISSUED_AT: checked.issued_at}
        if res.spec.get("disabled"):
            spec["disabled"] = True
        puts.append(Put(key, encode(res.replace(spec=spec))))
    if not changes:
        return {}
    if checked.issued_at <= last_issued_at:
        raise AccessDenied("the CA update is older than the one already applied (a replay)")
    try:
        await auth.backend.atomic(conditions, puts)
    except CompareFailed:
        raise AccessDenied(f"the CAs of {checked.cluster!r} changed meanwhile; the root sends "
                           "its CAs again on the next change") from None
    return {"cas": changes}


def _keys(ca: CertAuthority) -> tuple[str, ...]:
    """Fingerprints of every trusted key (SSH) or CA certificate (TLS), active first."""
    return tuple(ssh_fingerprint(p.public_key) if p.certificate is None
                 else "sha256:" + p.certificate.fingerprint(hashes.SHA256()).hex()
                 for p in ca.key_pairs)


def _keys_summary(changed: Mapping[str, Any]) -> str:
    cas = changed.get("cas") or {}
    return "; ".join(f"{name}: +{len(c['added'])} -{len(c['removed'])}"
                     for name, c in sorted(cas.items()))
