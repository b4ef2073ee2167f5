"""The audit log's checkpoint signer: auth's JWT CA key (ES256 by default).

Why that key: it already exists in every cluster, never leaves auth, rotates with the other CAs
(the old key stays trusted during a rotation), and its public half is an ordinary resource
(``CertAuthority/jwt.<cluster>``) that ``lmctl`` can read — from a running cluster's API or the
data directory — to check the checkpoints (``lmctl audit verify``); ``kid`` is its RFC 7638
thumbprint, as in the JWKS. Wired by ``limen.cli.compose`` (``limen start``) and
``limen.cli.admin_local`` (offline ``lmctl``) into their :class:`~limen.events.FileLog`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from limen.auth.core import AuthServer
from limen.auth.rotation import RotationState
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.keys import jwk_thumbprint, load_public_key
from limen.events.chain import CheckpointSigner, KeySigner, PublicKey
from limen.events.filelog import SignerSource

__all__ = ["audit_keys", "audit_signer_source"]


def audit_signer_source(server: AuthServer) -> SignerSource:
    """The signer source for ``FileLog.set_signer``: ``None`` until the server has its CAs,
    then the JWT CA's active key (re-read at every checkpoint, so a rotation takes effect)."""
    cache: dict[str, KeySigner] = {}

    def current() -> CheckpointSigner | None:
        if not server.initialized:
            return None
        ca = server.authorities.get(CertAuthorityType.JWT)
        kid = ca.active.kid
        if kid not in cache:
            cache.clear()
            cache[kid] = KeySigner(ca.signer, kid)
        return cache[kid]

    return current


def audit_keys(ca_document: Mapping[str, Any]) -> dict[str, PublicKey]:
    """``kid -> public key`` of every trusted key of a JWT CA (its resource spec or
    :meth:`CertAuthority.to_dict`) and of the keys its rotations retired (``spec.rotation``,
    ``limen.auth.rotation.RotationState.retired``: the checkpoints of the days before a
    rotation are signed by them): what checkpoints may be signed with."""
    ca = CertAuthority.from_dict(ca_document)
    keys = {}
    for line in RotationState.from_dict(ca_document.get("rotation")).retired:
        key = load_public_key(line)
        keys[jwk_thumbprint(key)] = key
    keys.update({pair.kid: pair.public_key for pair in ca.key_pairs})
    return keys
