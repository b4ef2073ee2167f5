"""The leaf's side of the trusted cluster handshake: one call to the root's proxy.

::

    probe GET  https://ROOT/v1/webapi/ping          root cluster name and TLS CA (checked
                                                    against ca_pin, or verified by the system
                                                    trust store when there is no pin)
    call  POST https://ROOT/v1/webapi/trustedclusters/validate   over TLS trusting that CA

The token is sent only once the root is verified: the probe's ping carries nothing secret;
with a pin, the call's TLS context trusts only the CA that matched ``ca_pin`` and requires the
server certificate to be the proxy certificate of the announced cluster
(``limen.ca.peer_role``), checked inside the TLS handshake before the request is written;
without a pin, the system trust store verifies the proxy. The caller's ``check_root`` must also
accept the root's name first (so a name clash does not burn the token). The token itself comes
only from the configured secret places (``limen.trust.secrets``). The wire format lives with
the root side, ``limen.auth.trusted_clusters.root_handshake``. Called by ``limen.trust.reconciler``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from limen.auth.join_client import pinned_proxy
from limen.auth.trusted_clusters.wire import ValidateRequest, ValidateResponse
from limen.errors import AccessDenied
from limen.net.http import ApiClient

__all__ = ["VALIDATE_PATH", "handshake"]

VALIDATE_PATH = "/v1/webapi/trustedclusters/validate"
TIMEOUT = 15.0
"""Seconds the validate call may take."""


async def handshake(proxy: str, ca_pin: str | None, request: ValidateRequest, *,
                    check_root: Callable[[str], Awaitable[None]]) -> ValidateResponse:
    """Run the handshake with the root behind ``proxy``; typed Limen errors on failure."""
    context, ping = await pinned_proxy(proxy, ca_pin)
    announced = str(ping.get("cluster", ""))
    await check_root(announced)
    async with ApiClient(f"https://{proxy}", context, timeout=TIMEOUT) as api:
        answer = ValidateResponse.from_json(await api.call("POST", VALIDATE_PATH,
                                                           request.to_json()))
    if answer.root_cluster != announced:
        raise AccessDenied(f"the root answered as cluster {answer.root_cluster!r} but "
                           f"announced {announced!r}")
    return answer
