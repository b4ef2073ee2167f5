"""A TLS client's check that the server it reached is the Limen component it means to reach.

A certificate signed by the cluster's TLS CA is not enough: every node, database or Kubernetes
agent holds one. A client of the proxy's web port (``lmsh``, agents joining, a leaf cluster's
handshake) must see the proxy's identity, and a client of the auth API auth's, or else a
compromised agent serving its own certificate takes the passwords and tokens sent to it
(CVE-2021-41393 class). :func:`require_server_role` makes a client ``ssl.SSLContext`` check
the server certificate's Limen identity (:func:`limen.ca.x509_certs.verify_server_cert`)
*inside* the handshake: ``ssl`` has no verification callback, so the context's SSL objects
and sockets are of subclasses whose ``do_handshake`` verifies the peer as soon as the
handshake has finished, before the connection is handed to the caller and before any request
is written.
The failure is a :class:`PeerRoleRefused` (an ``ssl.SSLCertVerificationError``), which
asyncio, aiohttp and ``http.client`` report like any other certificate error.

Called by ``limen.client.webapi`` (``lmsh``), ``limen.auth.client`` (joins, leaf handshakes,
the auth API pinned by a joining proxy), ``limen.agents.joining``,
``limen.ca.host_credentials`` (every ``AuthClient``: the server must be auth) and
``limen.proxy.trust_leaf_links`` (a leaf's proxy asking a root's proxy for its tunnel address).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence

from cryptography import x509

from limen.ca.identity import SystemRole
from limen.ca.x509_certs import verify_server_cert
from limen.errors import AccessDenied

__all__ = ["PeerRoleRefused", "require_server_role", "trust_map_from_pems"]


class PeerRoleRefused(ssl.SSLCertVerificationError):
    """The server's certificate verified, but it is not the expected component's."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.verify_message = reason

    def __str__(self) -> str:
        return self.reason


def trust_map_from_pems(pems: Mapping[str, bytes | str]) -> dict[str, list[x509.Certificate]]:
    """``cluster -> PEM bundle`` as ``cluster -> CA certificates``."""
    return {cluster: x509.load_pem_x509_certificates(pem.encode() if isinstance(pem, str)
                                                     else pem)
            for cluster, pem in pems.items()}


def require_server_role(context: ssl.SSLContext, role: SystemRole,
                        trusted: Mapping[str, Sequence[x509.Certificate]]) -> ssl.SSLContext:
    """Make ``context`` (a client context that verifies the chain) refuse, during the
    handshake, a server whose certificate is not ``role``'s of a cluster in ``trusted``
    (``cluster -> its TLS CA certificates``); returns ``context``."""
    if context.verify_mode is not ssl.CERT_REQUIRED:
        raise ValueError("a server role is checked on a verified certificate only")
    trust = {cluster: list(cas) for cluster, cas in trusted.items()}

    def check(der: bytes | None) -> None:
        if der is None:
            raise PeerRoleRefused("the server presented no certificate")
        try:
            verify_server_cert(x509.load_der_x509_certificate(der), trust, role)
        except (AccessDenied, ValueError) as err:
            raise PeerRoleRefused(f"the server is not a {role.value} of "
                                  f"{', '.join(sorted(trust)) or 'no cluster'}: "
                                  f"{err}") from None

    class _RoleCheckedObject(ssl.SSLObject):  # asyncio, aiohttp
        def do_handshake(self) -> None:
            super().do_handshake()
            check(self.getpeercert(binary_form=True))

    class _RoleCheckedSocket(ssl.SSLSocket):  # blocking sockets: http.client (the CLIs)
        def do_handshake(self, block: bool = False) -> None:
            super().do_handshake(block)
            check(self.getpeercert(binary_form=True))

    context.sslobject_class = _RoleCheckedObject
    context.sslsocket_class = _RoleCheckedSocket
    return context
