"""What a host receives when auth certifies it: ``HostCerts``.

Returned by ``limen.auth.core.AuthServer.issue_host_certs`` and by a join
(``limen.auth.host_join``); kept here, below both, so that the join need not import the server.
"""

from __future__ import annotations

from dataclasses import dataclass

from limen.ca.identity import Identity

__all__ = ["HostCerts"]


@dataclass(frozen=True)
class HostCerts:
    identity: Identity
    ssh_cert: bytes
    tls_cert: bytes
    """PEM; valid for server and client authentication."""
    user_ca_keys: list[str]
    host_ca_keys: list[str]
    tls_cas: str
    """PEM bundle of the cluster's TLS CA."""
