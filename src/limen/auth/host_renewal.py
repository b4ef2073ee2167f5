"""A host certificate renewed by the host itself, during a host CA rotation.

A process apart from auth (node agent, proxy, db/kube/app agent) that sees its SSH host
certificate signed by a key that is no longer the host CA's signing key (``update_servers``,
``rollback``; ``limen.agents.host_cert_renewal``) sends the certificate it holds; auth checks
that it is

* a host certificate of this cluster's host CA (any key still trusted), valid now,
* of the very host (host id and system role) the caller's TLS certificate names,

and signs the same key, host id, hostname and principals again with the current signing key.
Nothing the caller could choose is taken from elsewhere: a stolen or expired certificate of
another host, or a certificate of a retired key, is refused. Every issue and refusal is audited
(``cert.create``, ``cert_type: host``). Called by ``limen.auth.http.rotation``.

The proxy and agents in auth's own process renew with :func:`reissue_own_host_cert` instead
(``limen.cli.compose_rotation``): they are auth, nothing is proven by their certificate, and
one that missed ``update_servers`` (a phase shorter than its one-second look at the CAs) would
otherwise hold a certificate of a dropped key for good, and present it to every agent and leaf.
"""

from __future__ import annotations

from typing import Any

from limen.auth.core import HOST_CERT_TTL, AuthServer
from limen.ca.authority import CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.ssh_certs import parse_ssh_cert, sign_host_cert, verify_ssh_host_cert
from limen.errors import AccessDenied, LimenError

__all__ = ["RENEWERS", "reissue_own_host_cert", "renew_host_cert"]

RENEWERS = (SystemRole.NODE, SystemRole.PROXY, SystemRole.DB, SystemRole.KUBE, SystemRole.APP)
"""The system roles that may renew their host certificate."""


async def renew_host_cert(auth: AuthServer, caller: Identity, ssh_cert: str) -> dict[str, Any]:
    """The renewed certificate and the CA keys to trust now (see the module doc)."""
    try:
        if caller.system_role not in RENEWERS or not caller.host_id \
                or caller.cluster != auth.cluster_name:
            raise AccessDenied("only a host of this cluster may renew its host certificate")
        trusted = (await auth.authorities.trusted(CertAuthorityType.HOST))[auth.cluster_name]
        held = verify_ssh_host_cert(ssh_cert, {auth.cluster_name: trusted.trusted_public_keys()},
                                    auth.now())
        if held.host_id != caller.host_id or held.system_role is not caller.system_role:
            raise AccessDenied(f"the host certificate is {held.host_id}'s, not the caller's "
                               f"({caller.host_id})")
        renewed = _resign(auth, caller, ssh_cert, held.hostname)
    except LimenError as err:
        await auth.emit("cert.create", success=False, user=caller.username, cert_type="host",
                        reason=str(err))
        raise
    return await _renewed(auth, caller, renewed)


async def reissue_own_host_cert(auth: AuthServer, caller: Identity,
                                ssh_cert: str) -> dict[str, Any]:
    """The same answer for a part of auth's own process: its certificate is signed again
    whichever key signed it (see the module doc); audited as any renewal."""
    try:
        if caller.system_role not in RENEWERS or not caller.host_id \
                or caller.cluster != auth.cluster_name:
            raise AccessDenied("only a host of this cluster may renew its host certificate")
        renewed = _resign(auth, caller, ssh_cert, caller.hostname)
    except LimenError as err:
        await auth.emit("cert.create", success=False, user=caller.username, cert_type="host",
                        reason=str(err))
        raise
    return await _renewed(auth, caller, renewed)


def _resign(auth: AuthServer, caller: Identity, ssh_cert: str, hostname: str | None) -> bytes:
    """``ssh_cert``'s key and principals signed by the host CA's signing key, for ``caller``
    (a host: host id and system role checked by the caller)."""
    if not caller.host_id or caller.system_role is None:
        raise AccessDenied("only a host of this cluster may renew its host certificate")
    parsed = parse_ssh_cert(ssh_cert)
    principals = [p.decode() for p in parsed.valid_principals]
    host_ca = auth.authorities.get(CertAuthorityType.HOST)
    return sign_host_cert(host_ca, parsed.public_key(),  # type: ignore[arg-type]
                          caller.host_id, hostname, principals, HOST_CERT_TTL,
                          caller.system_role, now=auth.now())


async def _renewed(auth: AuthServer, caller: Identity, renewed: bytes) -> dict[str, Any]:
    await auth.emit("cert.create", user=caller.username, cert_type="host",
                    host_id=caller.host_id, renewal=True)
    host_ca = auth.authorities.get(CertAuthorityType.HOST)
    user_ca = (await auth.authorities.trusted(CertAuthorityType.USER))[auth.cluster_name]
    return {"ssh_cert": renewed.decode(), "host_ca_keys": list(host_ca.ssh_public_keys()),
            "user_ca_keys": list(user_ca.ssh_public_keys())}
