"""The join exchange on the wire, one handler body for the two places auth serves it::

    auth API (mutual TLS)   POST /v1/join   forwarded by a proxy from /v1/webapi/join: the
                                            caller must be a proxy; remote_addr is the one
                                            the proxy adds
    join listener (TLS)     POST /v1/join   a proxy run apart from auth, first join, with the
                                            static token of auth.proxy_token_file;
                                            remote_addr is the connection's
                            GET  /v1/join   the cluster name and TLS CA (public) a joiner
                                            checks its CA pin against before sending a token

    {token, role, host_id?, hostname, public_key, ssh_public_key?, addresses?, proof?}
    ◀── {cluster, host_id, ssh_cert, tls_cert, tls_cas, user_ca_keys, host_ca_keys}

Either way the token is what authenticates, and ``AuthServer.join`` (``limen.auth.host_join``)
checks it, settles the host id and audits the outcome. Called by ``limen.auth.http.app`` and
``limen.auth.http.join_listener``.
"""

from __future__ import annotations

from typing import Any

from limen.auth.core import AuthServer
from limen.auth.http.fields import optional_str, required_str, str_list
from limen.ca.authority import CertAuthorityType
from limen.errors import BadParameter

__all__ = ["JOIN_MAX_BODY", "JOIN_PATH", "join", "join_info"]

JOIN_PATH = "/v1/join"
JOIN_MAX_BODY = 64 << 10
"""A join request is a few keys: the bound of the proxy's web API for forwarded calls."""


def join_info(auth: AuthServer) -> dict[str, Any]:
    """What a joiner pins (the answer of ``GET /v1/join``; public, like the proxy's ping)."""
    tls_ca = auth.authorities.get(CertAuthorityType.TLS)
    return {"cluster": auth.cluster_name, "tls_ca_pin": auth.tls_ca_pin(),
            "tls_ca": tls_ca.pem_bundle()}


async def join(auth: AuthServer, body: dict[str, Any], remote_addr: str) -> dict[str, Any]:
    """Check the request's shape, join, and the answer (see the module doc)."""
    addresses = str_list(body, "addresses")
    proof = body.get("proof")
    if proof is not None and not isinstance(proof, dict):
        raise BadParameter("proof must be an object")
    certs = await auth.join(
        required_str(body, "token"), required_str(body, "role"),
        optional_str(body, "host_id") or "", required_str(body, "hostname"),
        required_str(body, "public_key"), addresses,
        remote_addr=remote_addr,
        ssh_public_key=optional_str(body, "ssh_public_key") or "", proof=proof,
    )
    return {
        "cluster": auth.cluster_name, "host_id": certs.identity.host_id,
        "ssh_cert": certs.ssh_cert.decode(),
        "tls_cert": certs.tls_cert.decode(), "tls_cas": certs.tls_cas,
        "user_ca_keys": certs.user_ca_keys, "host_ca_keys": certs.host_ca_keys,
    }


