"""One cluster's public CAs sent to a cluster it trusts or is trusted by: the signed update,
made and checked, in either direction of a trusted-cluster pair.

::

    sender proxy  make_update(its host credentials, CASet, now, direction)
        {cluster, issued_at, cas: {user: [ssh keys], host: [ssh keys], tls: PEM},
         cert: the sender proxy's SSH host certificate, signature}
        signature = sign(the proxy's SSH host key, direction.context + JSON
                         [cluster, issued_at, cas])
    ── cluster link ──▶ the other cluster's proxy ──POST──▶ its auth
    receiver auth check_update(update, sender cluster of the link, the sender's host CA keys
                               stored here, now, direction)

    ROOT_TO_LEAF  "limen-root-cas-v1": a root's CAs to its leaves (``cas`` message;
                  made by ``limen.proxy.trust_root_cas``, checked by ``leaf_cas``)
    LEAF_TO_ROOT  "limen-leaf-cas-v1": a leaf's own CAs to its roots (``leaf_cas`` message;
                  made by ``limen.proxy.trust_leaf_own_cas``, checked by ``root_leaf_cas``)

The receiving auth does not take its own proxy's word for anything: the update must name the
cluster of the link it came by, be signed by the key of a host certificate of that cluster's
PROXY that verifies against the sender's host CA the receiver trusts right now (stored at the
handshake, or by the last update), and, when it changes anything, be newer than the last one
applied (an older update is a replay: ``cas_apply``). The signed text starts with the
direction's context, so an update signed for one direction never verifies in the other.
So each update is vouched for by keys the receiver already trusts: a rotation of the sender's
host CA is followed as long as the receiver saw each phase (the new key is added while the old
one still signs the proxy's certificate). The CA set must parse completely and hold at least
one key of each type (``CASet.from_json``): a malformed or partial update, or one that would
leave zero keys, is refused as a whole. Pure functions (the clock is a parameter).
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from limen.auth.trusted_clusters.wire import CASet
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import PublicKey, load_private_key, sign_message, signature_verifies
from limen.ca.ssh_certs import parse_ssh_cert, verify_ssh_host_cert
from limen.errors import AccessDenied, BadParameter

__all__ = ["MAX_SKEW_MS", "CheckedUpdate", "Direction", "check_update", "make_update"]

MAX_SKEW_MS = 300_000
"""How far in the future (ms, by the leaf's clock) an update's ``issued_at`` may be."""
_MAX_SIGNATURE = 1024
_MAX_CERT = 16384


class Direction(enum.Enum):
    """Who sends the update to whom; its value is the signature's context."""

    ROOT_TO_LEAF = b"limen-root-cas-v1\n"
    LEAF_TO_ROOT = b"limen-leaf-cas-v1\n"

    @property
    def sender(self) -> str:
        """What the sending cluster is to the receiver: ``root`` or ``leaf``."""
        return "root" if self is Direction.ROOT_TO_LEAF else "leaf"

    @property
    def label(self) -> str:
        """The direction as audited: ``root_to_leaf`` or ``leaf_to_root``."""
        return self.name.lower()


@dataclass(frozen=True)
class CheckedUpdate:
    """An update that passed every check: the sender's CAs and when its proxy signed it."""

    cluster: str
    issued_at: int
    """Unix milliseconds."""
    cas: CASet
    signer: str
    """Host id of the sender's proxy that signed it."""


def _message(direction: Direction, cluster: str, issued_at: int,
             cas: Mapping[str, Any]) -> bytes:
    text = json.dumps([cluster, issued_at, cas], sort_keys=True, separators=(",", ":"))
    return direction.value + text.encode()


def make_update(credentials: HostCredentials, cas: CASet, now: datetime,
                direction: Direction = Direction.ROOT_TO_LEAF) -> dict[str, Any]:
    """The update a proxy sends in ``direction``: ``cas`` (this cluster's public CAs), signed
    with the SSH host key its host certificate certifies."""
    if not credentials.ssh_cert:
        raise BadParameter("the proxy holds no SSH host certificate to sign the CAs with")
    issued_at = int(now.timestamp() * 1000)
    body = cas.to_json()
    key = load_private_key(credentials.ssh_private_key_pem)
    message = _message(direction, credentials.cluster, issued_at, body)
    signature = sign_message(key, message)
    return {"cluster": credentials.cluster, "issued_at": issued_at, "cas": body,
            "cert": credentials.ssh_cert.decode().strip(),
            "signature": base64.b64encode(signature).decode()}


def check_update(update: Any, sender: str, host_ca_keys: Sequence[PublicKey],
                 now: datetime, direction: Direction = Direction.ROOT_TO_LEAF
                 ) -> CheckedUpdate:
    """``update`` checked as coming from cluster ``sender`` in ``direction`` (see the module
    doc): :class:`AccessDenied` for a wrong cluster, signer or signature (one made for the other
    direction included), or a date in the future;
    :class:`BadParameter` for a malformed, partial or empty CA set. Whether it is newer than
    the last one applied is the caller's check (an older copy of the same set is harmless)."""
    if not isinstance(update, Mapping):
        raise BadParameter("the CA update must be an object")
    cluster = update.get("cluster")
    if cluster != sender:
        raise AccessDenied(f"a CA update naming cluster {cluster!r} came by the link of "
                           f"{direction.sender} cluster {sender!r}")
    issued_at, cert, signature = (update.get("issued_at"), update.get("cert"),
                                  update.get("signature"))
    if not isinstance(issued_at, int) or isinstance(issued_at, bool) or issued_at <= 0:
        raise BadParameter("the CA update needs issued_at (unix milliseconds)")
    if not isinstance(cert, str) or not cert or len(cert) > _MAX_CERT or \
            not isinstance(signature, str) or len(signature) > _MAX_SIGNATURE:
        raise BadParameter("the CA update needs the signer's cert and a signature")
    cas = _ca_set(update.get("cas"))
    identity = verify_ssh_host_cert(cert, {sender: tuple(host_ca_keys)}, now)
    if identity.cluster != sender or identity.system_role is not SystemRole.PROXY:
        role = identity.system_role.value if identity.system_role else "none"
        raise AccessDenied(f"the CA update is signed by {identity.host_id} of {identity.cluster}"
                           f" (role {role}), not by a proxy of {sender}")
    try:
        raw = base64.b64decode(signature, validate=True)
    except binascii.Error:
        raise BadParameter("the CA update's signature is not base64") from None
    key = parse_ssh_cert(cert).public_key()
    if not signature_verifies(key, raw, _message(direction, sender, issued_at, cas.to_json())):
        raise AccessDenied(f"the CA update's signature does not verify with the "
                           f"{direction.sender} proxy's host certificate for the "
                           f"{direction.label} direction")
    if issued_at > now.timestamp() * 1000 + MAX_SKEW_MS:
        raise AccessDenied("the CA update is dated in the future")
    return CheckedUpdate(sender, issued_at, cas, identity.host_id or "")


def _ca_set(value: Any) -> CASet:
    """The CA set of an update, complete; nothing of it is used when any part is wrong."""
    if not isinstance(value, Mapping):
        raise BadParameter("the CA update carries no CA set")
    for name in ("user", "host"):
        if value.get(name) == []:
            raise BadParameter(f"the CA update would leave zero {name} CA keys")
    if value.get("tls") == "":
        raise BadParameter("the CA update would leave zero TLS CA certificates")
    if any("PRIVATE KEY" in str(item) for item in value.values()):
        raise BadParameter("the CA update carries a private key")
    return CASet.from_json(dict(value), "cas")

