"""A signed CA update of another cluster, applied: checked, then stored in place of that
cluster's CAs, in either direction of a trusted-cluster pair.

::

    apply_update(auth, direction, cluster, update, load)
      load(auth, cluster): the other cluster's stored CAs user/host/tls.<cluster>, all three,
                           while it is still trusted here (else AccessDenied)
      check_update (limen.auth.trusted_clusters.ca_update): the link's cluster, signed in
                           ``direction`` by a proxy of that cluster whose host certificate
                           the stored host CA verifies
      same keys ─▶ nothing written (an older copy of the current set is harmless)
      older than the last update applied ─▶ refused (a replay)
      else ─▶ the three CAs replaced in ONE compare-and-swap transaction (labels and the
              spec's ``disabled`` kept, ``issued_at`` recorded), audited trusted_cluster.cas
    any refusal ─▶ nothing changes (the previous set stays), a log line, and an audit event
                   trusted_cluster.cas with success false and the reason

The audit events name the direction (``root_to_leaf``, ``leaf_to_root``) and the sender as
``root_cluster`` or ``leaf_cluster``. Called by ``leaf_cas`` (a root's CAs at its leaf) and
``root_leaf_cas`` (a leaf's own CAs at its root), which only say which stored CAs count.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes

from limen.api.resources import Kind, Resource
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.ca_update import CheckedUpdate, Direction, check_update
from limen.backend.base import Condition, Put
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.keys import ssh_fingerprint
from limen.errors import AccessDenied, BadParameter, CompareFailed
from limen.services.resource_store import encode, resource_key

__all__ = ["EVENT", "ISSUED_AT", "TYPES", "StoredCAs", "apply_update"]

log = logging.getLogger(__name__)

EVENT = "trusted_cluster.cas"
ISSUED_AT = "issued_at"
"""Spec field of another cluster's stored CA: ``issued_at`` of the update that wrote it (ms)."""
TYPES = (CertAuthorityType.USER, CertAuthorityType.HOST, CertAuthorityType.TLS)

StoredCAs = Callable[[AuthServer, str], Awaitable[dict[CertAuthorityType, Resource]]]
"""``(auth, cluster) -> its stored CAs by type`` (all of :data:`TYPES`);
:class:`AccessDenied` when the cluster is not (or no longer) trusted here."""


async def apply_update(auth: AuthServer, direction: Direction, cluster: str, update: Any,
                       load: StoredCAs, *, relayed_by: str = "") -> bool:
    """Check and store ``cluster``'s CA update (see the module doc); True when the stored CAs
    changed. :class:`AccessDenied` or :class:`BadParameter` (audited) when refused."""
    who = {f"{direction.sender}_cluster": cluster, "direction": direction.label}
    try:
        stored = await load(auth, cluster)
        keys = CertAuthority.from_dict(stored[CertAuthorityType.HOST].spec).trusted_public_keys()
        last = max(_issued_at(r) for r in stored.values())
        checked = check_update(update, cluster, keys, auth.now(), direction)
        changed = await _store(auth, stored, checked, last)
    except (AccessDenied, BadParameter) as err:
        log.warning("trusted %s %s: CA update refused, the previous CAs are kept: %s",
                    direction.sender, cluster, err)
        await auth.emit(EVENT, success=False, reason=str(err), proxy=relayed_by, **who)
        raise
    if changed:
        log.info("trusted %s %s: CAs updated (signed by %s): %s", direction.sender, cluster,
                 checked.signer, _keys_summary(changed))
        await auth.emit(EVENT, success=True, signer=checked.signer, proxy=relayed_by, **who,
                        **changed)
    return bool(changed)


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
        raise AccessDenied(f"the CAs of {checked.cluster!r} changed meanwhile; they are sent "
                           "again on the next change") from None
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
