"""The proxy and agents in auth's own process follow a CA rotation, as those apart do.

:class:`LocalRotation` is a daemon service started after them: it runs one
:class:`~limen.agents.host_cert_renewal.HostCertRenewal` per part, fed by :class:`AuthTrust`
(auth's own CAs, as its :class:`~limen.auth.rotation_service.RotationService` keeps them
current) and renewing by a direct signature
(:func:`limen.auth.host_renewal.reissue_own_host_cert`, audited as any renewal; also after a
phase it missed). Their credentials are issued at every start and never saved. Called by
``limen.cli.compose``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Protocol

from limen.agents.host_cert_renewal import CredentialsUser, HostCertRenewal
from limen.agents.node.node_service import NodeService
from limen.auth.core import AuthServer
from limen.auth.host_renewal import reissue_own_host_cert
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.cli.proxy_component import ProxyComponent
from limen.tunnel.agent_pool import TunnelAgentPool

__all__ = ["AuthTrust", "LocalRotation", "TunnelAgentService"]

INTERVAL = 1.0
"""Seconds between two looks at auth's CAs."""


class AuthTrust:
    """``limen.agents.host_cert_renewal.OwnTrust`` read from the auth server in this process."""

    def __init__(self, auth: AuthServer) -> None:
        self.auth = auth

    @property
    def own_user_keys(self) -> tuple[str, ...]:
        return self.auth.authorities.get(CertAuthorityType.USER).ssh_public_keys()

    @property
    def own_host_keys(self) -> tuple[str, ...]:
        return self.auth.authorities.get(CertAuthorityType.HOST).ssh_public_keys()

    @property
    def host_signer(self) -> str:
        return self.auth.authorities.get(CertAuthorityType.HOST).active.ssh_public_key

    @property
    def host_phase(self) -> str:
        return self.auth.authorities.rotation(CertAuthorityType.HOST).phase.value

    def wait_changed(self, within: float | None = None) -> Coroutine[Any, Any, bool]:
        """Auth's CAs change in this process with no notice: look again after ``within``."""
        async def later() -> bool:
            await asyncio.sleep(INTERVAL if within is None else within)
            return False

        return later()


class TunnelAgentService(Protocol):
    """A db, kube or app agent: its credentials and tunnel agents."""

    credentials: HostCredentials
    tunnel: TunnelAgentPool | None


class LocalRotation:
    """See the module doc. ``node``: the node agent's service once started (None: none);
    ``agents``: the db, kube and app agents' services once started."""

    name = "ca-rotation-local"

    def __init__(self, auth: AuthServer, proxy: ProxyComponent,
                 node: Callable[[], NodeService | None],
                 agents: Callable[[], Sequence[TunnelAgentService | None]] = list) -> None:
        self.auth = auth
        self.proxy = proxy
        self.node = node
        self.agents = agents
        self.renewals: list[HostCertRenewal] = []

    async def _renew(self, creds: HostCredentials) -> Mapping[str, Any]:
        identity = Identity.for_host(creds.cluster, creds.host_id, creds.hostname or None,
                                     SystemRole(creds.role))
        return await reissue_own_host_cert(self.auth, identity, creds.ssh_cert.decode())

    async def start(self) -> dict[str, str]:
        trust = AuthTrust(self.auth)
        parts: list[tuple[HostCredentials, CredentialsUser]] = []
        if self.proxy.ssh is not None:
            parts.append((self.proxy.ssh.credentials, self.proxy.use_credentials))
        node = self.node()
        if node is not None:
            async def follow(new: HostCredentials) -> None:
                await node.server.use_credentials(new)
                if node.tunnel is not None:
                    node.tunnel.use_credentials(new)

            parts.append((node.config.credentials, follow))
        for agent in self.agents():
            if agent is not None:
                parts.append((agent.credentials, _tunnel_follower(agent)))
        for creds, target in parts:
            renewal = HostCertRenewal(trust, self._renew, creds, None, [target],
                                      interval=INTERVAL)
            await renewal.start()
            self.renewals.append(renewal)
        return {}

    async def stop(self) -> None:
        for renewal in self.renewals:
            await renewal.stop()
        self.renewals.clear()


def _tunnel_follower(agent: TunnelAgentService) -> CredentialsUser:
    async def follow(new: HostCredentials) -> None:
        agent.credentials = new
        if agent.tunnel is not None:
            agent.tunnel.use_credentials(new)

    return follow
