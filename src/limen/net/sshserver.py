"""A base for Limen's asyncssh servers that accept public keys (and certificates) only.

Called by the proxy's SSH front and the tunnel server's control connections.
"""

from __future__ import annotations

import asyncssh

__all__ = ["PublicKeyOnlyServer"]


class PublicKeyOnlyServer(asyncssh.SSHServer):
    """Never offers passwords, keyboard-interactive or host-based authentication."""

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False
