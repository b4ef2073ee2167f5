"""The auth API as an agent started apart from auth reaches it: through its reverse tunnel.

:meth:`AuthLink.attach` opens the tunnel agent's loopback listener (each connection is spliced
by the proxy to auth, mutual TLS end to end) and builds the :class:`AuthClient` on it; callers
wait for that with :meth:`client`. Used by the remote role lookup, the audit outbox, the
recording uploader and the trusted-roots poll (``limen.trust.roots_poller``) of a separately
run node (``limen.cli.compose_remote``).
"""

from __future__ import annotations

import asyncio

from limen.auth.client import AuthClient
from limen.ca.host_credentials import HostCredentials
from limen.errors import ConnectionProblem
from limen.tunnel.auth_route import AuthRouteOwner

__all__ = ["AuthLink"]


class AuthLink:
    def __init__(self, credentials: HostCredentials, *, timeout: float = 15.0) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self._client: AuthClient | None = None
        self._ready = asyncio.Event()

    async def attach(self, tunnel: AuthRouteOwner) -> None:
        address = await tunnel.local_auth_listener()
        self._client = AuthClient(address, self.credentials, timeout=self.timeout)
        self._ready.set()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def client(self) -> AuthClient:
        try:
            async with asyncio.timeout(self.timeout):
                await self._ready.wait()
        except TimeoutError:
            raise ConnectionProblem("no route to auth yet (the tunnel is not up)") from None
        assert self._client is not None
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
