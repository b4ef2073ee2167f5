"""Which key type a Limen process's own key is, by its system role.

A process has one key for its TLS certificate and its SSH host certificate. The proxy's is
ECDSA P-256: its TLS certificate is the one the web listener serves to browsers and other
public TLS clients, and browsers do not accept Ed25519 certificates (the TLS CA is P-256 for
the same reason). Its SSH listeners (SSH front, tunnel) present a second key, Ed25519, with
the SSH host certificate (:func:`new_ssh_host_key`): the hardened SSH algorithm sets
(``limen.net.sshalgs``) take Ed25519 and RSA-SHA2 host keys only, no NIST curves. Every other
role (auth, agents, the admin identity) has one Ed25519 key for both: their certificates are
only seen by Limen peers.

Called by ``limen.auth.auth_service`` (credentials of the components auth runs in its process)
and ``limen.agents.joining`` (a proxy joining apart from auth).
"""

from __future__ import annotations

from limen.ca.identity import SystemRole
from limen.ca.keys import KeyType, PrivateKey, generate_private_key

__all__ = ["PUBLIC_TLS_KEY_TYPE", "host_key_type", "new_host_key", "new_ssh_host_key"]

PUBLIC_TLS_KEY_TYPE = KeyType.ECDSA_P256
"""The key type of a certificate served to clients outside Limen (the proxy's web listener)."""


def host_key_type(role: SystemRole | str) -> KeyType:
    """P-256 for the proxy (public TLS), Ed25519 for every other role."""
    return PUBLIC_TLS_KEY_TYPE if SystemRole(role) is SystemRole.PROXY else KeyType.ED25519


def new_host_key(role: SystemRole | str) -> PrivateKey:
    """A fresh private key of :func:`host_key_type` for ``role``."""
    return generate_private_key(host_key_type(role))


def new_ssh_host_key(role: SystemRole | str) -> PrivateKey | None:
    """A separate Ed25519 SSH host key when ``role``'s key is not Ed25519 (the proxy), else
    None (the SSH host certificate certifies the process's one key)."""
    if host_key_type(role) is KeyType.ED25519:
        return None
    return generate_private_key(KeyType.ED25519)
