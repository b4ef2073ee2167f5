"""The SSH host key a Limen process presents, and the check of a peer's host certificate.

* :func:`host_key` turns :class:`~limen.ca.host_credentials.HostCredentials` into the asyncssh
  key and certificate objects a server presents or a client logs in with.
* :func:`verify_peer_host_cert` is the in-band check both ends of a tunnel control connection
  run: the peer's host certificate must be valid for this cluster's host CA (signature, cluster,
  expiry) AND certify the very key the peer proved it holds in the SSH handshake.

The algorithms and packet size of those connections are :mod:`limen.net.sshalgs`'s. Called by
:mod:`limen.tunnel.server`, :mod:`limen.tunnel.agent`, :mod:`limen.tunnel.control` and the
proxy's SSH front.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncssh

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PublicKey, load_public_key, ssh_public_key_blob
from limen.ca.ssh_certs import parse_ssh_cert, verify_ssh_host_cert
from limen.errors import AccessDenied, BadParameter

__all__ = ["cert_line", "host_key", "trust_map", "verify_peer_host_cert"]


def host_key(credentials: HostCredentials) -> tuple[Any, Any]:
    """``(asyncssh private key, asyncssh certificate)`` of a Limen process."""
    if not credentials.ssh_cert:
        raise BadParameter(f"credentials of {credentials.host_id} hold no SSH certificate")
    try:
        key = asyncssh.import_private_key(credentials.ssh_private_key_pem)
        cert = asyncssh.import_certificate(credentials.ssh_cert)
    except (asyncssh.KeyImportError, ValueError) as err:
        raise BadParameter(f"cannot load the SSH key of {credentials.host_id}: {err}") from None
    return key, cert


def trust_map(credentials: HostCredentials, *, user: bool = False
              ) -> dict[str, tuple[PublicKey, ...]]:
    """``{cluster: CA keys}`` of this cluster's host CA (or user CA), for the verifiers."""
    lines = credentials.user_ca_keys if user else credentials.host_ca_keys
    return {credentials.cluster: tuple(load_public_key(line) for line in lines)}


def cert_line(algorithm: bytes | str, blob: bytes) -> str:
    """The OpenSSH text form of a certificate given as its wire blob."""
    name = algorithm.decode() if isinstance(algorithm, bytes) else algorithm
    return f"{name} {base64.b64encode(blob).decode()}"


def verify_peer_host_cert(
    cert: str, key_blob: bytes, trusted: Mapping[str, Sequence[PublicKey]],
    roles: Collection[SystemRole], now: datetime | None = None,
) -> Identity:
    """The peer's identity; :class:`AccessDenied` naming the reason otherwise.

    ``key_blob`` is the SSH wire encoding of the key the peer authenticated with in the SSH
    handshake (the server's host key, or the client's user-auth key)."""
    identity = verify_ssh_host_cert(cert, trusted, now)
    if identity.system_role not in roles:
        role = identity.system_role.value if identity.system_role else "none"
        raise AccessDenied(f"host certificate of {identity.host_id} has role {role}, "
                           f"expected {'/'.join(sorted(r.value for r in roles))}")
    if ssh_public_key_blob(parse_ssh_cert(cert).public_key()) != key_blob:  # type: ignore[arg-type]
        raise AccessDenied("the host certificate does not certify the key used in the SSH "
                           "handshake")
    return identity
