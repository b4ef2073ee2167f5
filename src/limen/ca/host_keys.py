"""Which key type a Limen process's own key is, by its system role.

A process has one key for its TLS certificate and its SSH host certificate. The proxy's is
ECDSA P-256: its TLS certificate is the one the web listener serves to browsers and other
public TLS clients, and browsers do not accept Ed25519 certificates (the TLS CA is P-256 for
the same reason). Its SSH host certificate is then ``ecdsa-sha2-nistp256-cert-v01``, which
the ``HostKeyAlgorithms`` Limen writes for OpenSSH already lists. Every other role (auth,
agents, the admin identity) keeps Ed25519: their certificates are only seen by Limen peers.

Called by ``limen.auth.service`` (credentials of the components auth runs in its process)
and ``limen.agents.joining`` (a proxy joining apart from auth).
"""

from __future__ import annotations

from limen.ca.identity import SystemRole
from limen.ca.keys import KeyType, PrivateKey, generate_private_key

__all__ = ["PUBLIC_TLS_KEY_TYPE", "host_key_type", "new_host_key"]

PUBLIC_TLS_KEY_TYPE = KeyType.ECDSA_P256
"""The key type of a certificate served to clients outside Limen (the proxy's web listener)."""


def host_key_type(role: SystemRole | str) -> KeyType:
    """P-256 for the proxy (public TLS), Ed25519 for every other role."""
    return PUBLIC_TLS_KEY_TYPE if SystemRole(role) is SystemRole.PROXY else KeyType.ED25519


def new_host_key(role: SystemRole | str) -> PrivateKey:
    """A fresh private key of :func:`host_key_type` for ``role``."""
    return generate_private_key(host_key_type(role))
