"""The join exchange an agent runs against a proxy's web API with a token and a CA pin, and the
pinned first contact it starts with.

Join (agent side)::

    agent ──TLS, CA pinned──▶ proxy /v1/webapi/join ──mTLS──▶ auth /v1/join
          {token, role, host_id?, hostname, public_key, proof?}
          ◀── host id, host SSH cert, TLS cert, user/host CA keys, TLS CA ──

The proxy must show a proxy's certificate of the pinned cluster (its Limen identity, checked in
the handshake by ``limen.ca.peer_role``), and auth an auth's: a certificate the cluster CA
signed for a node is refused before the token is sent. ``proof``: the joiner's current
credentials sign the request when it joins again under its host id (``limen.auth.host_proof``).

Called by ``limen.agents.joining`` and ``limen.trust.handshake`` (a leaf's first contact with
its root's proxy).
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from limen.auth.host_proof import make_proof
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import SystemRole
from limen.ca.keys import (
    generate_private_key,
    pin_matches,
    private_key_to_pem,
    public_key_to_openssh,
)
from limen.ca.peer_role import require_server_role
from limen.errors import AccessDenied
from limen.net.http import ApiClient

__all__ = ["join_via_proxy", "pinned_auth", "pinned_proxy"]


async def pinned_proxy(proxy: str, ca_pin: str | None, *,
                       insecure: bool = False) -> tuple[ssl.SSLContext, dict[str, Any]]:
    """Ping ``proxy`` and return a TLS context trusting its CA, and the ping.

    With ``ca_pin`` the CA the proxy presents must match it (first contact: the ping itself is
    not verified, only what it returns is); without a pin the system trust store must verify
    the proxy's certificate. ``insecure`` accepts any CA (tests, explicit opt-in)."""
    if ca_pin is None and not insecure:
        context = ssl.create_default_context()
        async with ApiClient(f"https://{proxy}", context) as verified:
            answer: dict[str, Any] = await verified.call("GET", "/v1/webapi/ping")
        return context, answer
    return await _pinned(proxy, "/v1/webapi/ping", ca_pin, SystemRole.PROXY, insecure=insecure)


async def pinned_auth(join_listener: str, ca_pin: str) -> ssl.SSLContext:
    """A TLS context trusting the auth server's CA, which must match ``ca_pin``, and only a
    server with auth's certificate. ``join_listener``: auth's join listener, whose
    ``GET /v1/join`` tells the CA (``limen.auth.http.join_listener``; the auth API itself
    answers no one without a client certificate)."""
    context, _ping = await _pinned(join_listener, "/v1/join", ca_pin, SystemRole.AUTH)
    return context


async def _pinned(address: str, ping_path: str, ca_pin: str | None, role: SystemRole, *,
                  insecure: bool = False) -> tuple[ssl.SSLContext, dict[str, Any]]:
    probe_ctx = ssl.create_default_context()
    probe_ctx.check_hostname = False
    probe_ctx.verify_mode = ssl.CERT_NONE
    async with ApiClient(f"https://{address}", probe_ctx) as probe:
        ping: dict[str, Any] = await probe.call("GET", ping_path)
    ca_pem = str(ping.get("tls_ca", "")).encode()
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise AccessDenied(f"{address} presented no usable CA certificate") from None
    if not insecure and not any(pin_matches(str(ca_pin), ca) for ca in cas):
        raise AccessDenied(f"{address} presented a CA that does not match the pin "
                           f"{ca_pin}; refusing to join")
    context = ssl.create_default_context(cadata=ca_pem.decode())
    return require_server_role(context, role, {str(ping.get("cluster", "")): cas}), ping


async def join_via_proxy(
    proxy: str, token: str, ca_pin: str, *, role: str, host_id: str, hostname: str,
    addresses: Sequence[str] = (), insecure: bool = False,
    current: HostCredentials | None = None,
) -> HostCredentials:
    """Join the cluster behind ``proxy``: the proxy's TLS CA must match ``ca_pin``.
    ``host_id``: the saved one (empty: auth picks one); ``current``: this host's credentials
    still valid, the proof needed to join again under its id. ``addresses`` are sent for the
    record only: auth decides the names in the certificates."""
    context, _ping = await pinned_proxy(proxy, ca_pin, insecure=insecure)
    key = generate_private_key()
    public_key = public_key_to_openssh(key.public_key())
    body: dict[str, Any] = {"token": token, "role": role, "host_id": host_id,
                            "hostname": hostname, "public_key": public_key,
                            "addresses": list(addresses)}
    if current is not None:
        body["proof"] = make_proof(current, SystemRole(role), public_key, datetime.now(UTC))
    async with ApiClient(f"https://{proxy}", context) as api:
        answer = await api.call("POST", "/v1/webapi/join", body)
    return HostCredentials(
        cluster=answer["cluster"], host_id=str(answer.get("host_id") or host_id), role=role,
        hostname=hostname,
        private_key_pem=private_key_to_pem(key).encode(),
        tls_cert_pem=answer["tls_cert"].encode(), tls_ca_pem=answer["tls_cas"].encode(),
        ssh_cert=answer["ssh_cert"].encode(),
        user_ca_keys=tuple(answer["user_ca_keys"]), host_ca_keys=tuple(answer["host_ca_keys"]),
    )
