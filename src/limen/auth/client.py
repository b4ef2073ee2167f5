"""Client of the auth API (mutual TLS, the caller's identity): ``AuthClient``, used by the proxy,
agents, the operator and ``lmctl``. Services call through aiohttp (``limen.net.http``); a
command line asks for the standard library's client (``blocking=True``,
``limen.net.cli_http``), which starts faster. The join exchange an agent runs against a proxy
is ``limen.auth.join_client``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from limen.ca.host_credentials import HostCredentials
from limen.net.cli_http import CliApiClient

if TYPE_CHECKING:
    from limen.net.http import ApiClient

__all__ = ["USER_CERT_HEADER", "AuthClient"]

USER_CERT_HEADER = "X-Limen-User-Cert"
"""Set by the proxy on calls it makes for a user: the user's client certificate (base64 DER),
whose key possession the proxy checked in its TLS handshake; auth re-verifies the certificate."""


def _aiohttp_client() -> type[ApiClient]:
    from limen.net.http import ApiClient  # aiohttp: not imported by the command lines

    return ApiClient


class AuthClient:
    """Typed calls to one auth server with one identity."""

    def __init__(self, address: str, credentials: HostCredentials, *,
                 timeout: float = 30.0, blocking: bool = False) -> None:
        """``blocking``: on the standard library's client (a command line's fast start)
        instead of aiohttp's (services: many concurrent calls)."""
        self.address = address
        self.credentials = credentials
        client = CliApiClient if blocking else _aiohttp_client()
        self.http: ApiClient | CliApiClient = client(f"https://{address}",
                                                     credentials.client_ssl(), timeout=timeout)

    async def __aenter__(self) -> AuthClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.close()

    async def call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                   params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
                   *, as_user_cert: bytes | None = None) -> Any:
        """``as_user_cert`` (DER): act for that user (proxies only; see USER_CERT_HEADER)."""
        headers = ({USER_CERT_HEADER: base64.b64encode(as_user_cert).decode()}
                   if as_user_cert else None)
        return await self.http.call(method, path, body, params, headers=headers)

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/v1/ping")
        return result

    async def apply(self, documents: Sequence[Mapping[str, Any]], origin: str = "api",
                    prune: bool = False) -> list[dict[str, str]]:
        result = await self.call("POST", "/v1/resources/apply",
                                 {"documents": list(documents), "origin": origin, "prune": prune})
        return list(result["results"])

    async def list(self, kind: str) -> list[dict[str, Any]]:
        return list((await self.call("GET", f"/v1/resources/{kind}"))["items"])

    async def get(self, kind: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", f"/v1/resources/{kind}/{name}")
        return result

    async def delete(self, kind: str, name: str, origin: str = "api") -> None:
        await self.call("DELETE", f"/v1/resources/{kind}/{name}", params={"origin": origin})
