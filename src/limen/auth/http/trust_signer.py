"""Auth's signing identity for its trust answer: a key of its own and an ``auth`` certificate of
this cluster's TLS CA for it, kept in memory and reissued when the TLS CA's active key
changes (a rotation) or the certificate nears its end.

The documents it signs (``limen.auth.trust_signature.sign_trust``) travel from a proxy to the
nodes over their tunnels; a node checks them against the TLS CA it trusts and the ``auth``
role, so no proxy can change what a node trusts. The key never leaves the auth process (the
process holds the CA's private key anyway). Used by ``limen.auth.http.trust_leaf``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from limen.auth.core import AuthServer
from limen.auth.trust_signature import sign_trust
from limen.ca.authority import CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PrivateKey, generate_private_key
from limen.ca.x509_certs import sign_server_cert

__all__ = ["SIGNER_HOST_ID", "TrustSigner"]

SIGNER_HOST_ID = "auth-trust-signer"
"""The host id (and name) the signing certificate carries."""


class TrustSigner:
    """See the module doc. ``ttl``: the signing certificate's lifetime."""

    def __init__(self, auth: AuthServer, ttl: timedelta = timedelta(hours=12)) -> None:
        self.auth = auth
        self.ttl = ttl
        self._held: tuple[str, PrivateKey, str, datetime] | None = None
        """(TLS CA fingerprint, key, certificate PEM, not after)."""

    def _credentials(self, now: datetime) -> tuple[PrivateKey, str]:
        tls_ca = self.auth.authorities.get(CertAuthorityType.TLS)
        held = self._held
        if held is None or held[0] != tls_ca.fingerprint or held[3] - now < self.ttl / 4:
            key = generate_private_key()
            identity = Identity.for_host(self.auth.cluster_name, SIGNER_HOST_ID,
                                         SIGNER_HOST_ID, SystemRole.AUTH)
            cert = sign_server_cert(tls_ca, key.public_key(), [SIGNER_HOST_ID], (), self.ttl,
                                    identity, now=now)
            held = (tls_ca.fingerprint, key, cert.public_bytes(Encoding.PEM).decode(),
                    cert.not_valid_after_utc)
            self._held = held
        return held[1], held[2]

    def sign(self, answer: Mapping[str, Any], *, keepalive: bool = False) -> dict[str, Any]:
        """``answer`` (auth's full trust answer) signed now; ``keepalive``: only its cluster
        and revision ("still current")."""
        now = self.auth.now()
        key, cert = self._credentials(now)
        return sign_trust(key, cert, str(answer["cluster"]), str(answer["revision"]),
                          int(now.timestamp() * 1000), None if keepalive else answer)
