"""A process apart from auth follows a CA rotation without a restart.

::

    RemoteTrustCache (auth's trust answer, polled) ──changed──▶ HostCertRenewal.step()
      own user/host CA keys differ from the credentials' ──▶ credentials with the new keys
      host CA phase update_servers | rollback | standby, and the host certificate signed by
      another key than the host CA's signing key ──▶ POST /v1/host/renew {ssh_cert}
                                                     (limen.auth.host_renewal)
      ──▶ saved to DATA_DIR/host (a restart keeps them) ──▶ each target's use_credentials()

The trust may also be auth's own CAs and the renewal a direct signature
(``limen.cli.compose_rotation``: the proxy and node agent in auth's process).

Targets are the parts that verify peers or present the host certificate: the node's SSH server
and tunnel agents, the proxy's SSH front, tunnel server and SSH route. They use the new
credentials for *new* connections; open sessions keep the keys they were set up with, so
nothing drops. A renewal that fails (auth unreachable) is tried again at the next change or
``interval``. Started by ``limen.cli.compose_remote`` for the node agent and the proxy apart
from auth, and by ``limen.cli.compose_rotation`` for those in auth's process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from limen.aio.task_service import TaskService
from limen.auth.client import AuthClient
from limen.ca.host_credentials import HostCredentials
from limen.ca.keys import load_public_key, ssh_public_key_blob
from limen.ca.ssh_certs import parse_ssh_cert
from limen.errors import BadParameter, LimenError

__all__ = ["RENEWING_PHASES", "CredentialsUser", "HostCertRenewal", "OwnTrust", "Renew",
           "remote_renewal", "signed_by"]

log = logging.getLogger(__name__)

RENEWING_PHASES = frozenset({"update_servers", "rollback", "standby"})
"""Host CA phases in which a host whose certificate another key signed renews it."""
HOST_RENEW_PATH = "/v1/host/renew"


CredentialsUser = Callable[[HostCredentials], Awaitable[None]]
"""A part that takes new credentials for its new connections."""
Renew = Callable[[HostCredentials], Awaitable[Mapping[str, Any]]]
"""Asks for a renewed host certificate: ``{ssh_cert, host_ca_keys, user_ca_keys}``."""


class OwnTrust(Protocol):
    """This cluster's CA keys (OpenSSH lines) and host CA phase as last known
    (``limen.trust.roots_poller.RemoteTrustCache`` is one)."""

    @property
    def own_user_keys(self) -> tuple[str, ...]: ...
    @property
    def own_host_keys(self) -> tuple[str, ...]: ...
    @property
    def host_signer(self) -> str: ...
    @property
    def host_phase(self) -> str: ...
    def wait_changed(self, within: float | None = None) -> Coroutine[Any, Any, bool]: ...


def remote_renewal(client: Callable[[], Awaitable[AuthClient]]) -> Renew:
    """The renewal of a process apart from auth: ``POST /v1/host/renew`` with its current
    certificate (``limen.auth.host_renewal`` checks it)."""
    async def renew(creds: HostCredentials) -> Mapping[str, Any]:
        answer = await (await client()).call("POST", HOST_RENEW_PATH,
                                             {"ssh_cert": creds.ssh_cert.decode().strip()})
        if not isinstance(answer, dict):
            raise BadParameter("auth's host certificate renewal answer is not an object")
        return answer

    return renew


def signed_by(ssh_cert: bytes, ca_key_line: str) -> bool:
    """Whether the SSH certificate was signed by the CA key ``ca_key_line`` (OpenSSH text)."""
    try:
        signer = parse_ssh_cert(ssh_cert).signature_key()
    except (LimenError, ValueError):
        return False
    return ssh_public_key_blob(signer) == ssh_public_key_blob(  # type: ignore[arg-type]
        load_public_key(ca_key_line))


class HostCertRenewal(TaskService):
    """See the module doc. ``credentials``: those in use; ``host_dir``: where they are saved
    (None: nowhere, they are issued at every start); ``targets``: called with every new set."""

    name = "host-cert-renewal"

    def __init__(self, trust: OwnTrust, renew: Renew, credentials: HostCredentials,
                 host_dir: Path | None, targets: Sequence[CredentialsUser], *,
                 interval: float = 3.0) -> None:
        self.trust = trust
        self.renew = renew
        self.credentials = credentials
        self.host_dir = host_dir
        self.targets = list(targets)
        self.interval = interval
        self.renewals = 0
        """How many host certificates were renewed (tests, logs)."""

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except (LimenError, OSError) as err:
                log.warning("CA rotation: cannot renew this host's certificate yet: %s", err)
            await self.trust.wait_changed(self.interval)

    async def step(self) -> None:
        """Take the CA keys auth trusts now; renew the host certificate when due."""
        creds = self.credentials
        user_keys = self.trust.own_user_keys or creds.user_ca_keys
        host_keys = self.trust.own_host_keys or creds.host_ca_keys
        updated = replace(creds, user_ca_keys=tuple(user_keys), host_ca_keys=tuple(host_keys))
        signer = self.trust.host_signer
        if signer and self.trust.host_phase in RENEWING_PHASES \
                and not signed_by(creds.ssh_cert, signer):
            updated = await self._renew(updated)
        if updated != creds:
            await self._use(updated)

    async def _renew(self, creds: HostCredentials) -> HostCredentials:
        answer = await self.renew(creds)
        cert = answer.get("ssh_cert")
        if not isinstance(cert, str) or not signed_by(cert.encode(), self.trust.host_signer):
            raise BadParameter("auth's renewed host certificate is not signed by the host "
                               "CA's signing key")
        self.renewals += 1
        log.info("CA rotation: host certificate of %s renewed", creds.host_id)
        return replace(creds, ssh_cert=cert.encode(),
                       host_ca_keys=tuple(answer.get("host_ca_keys") or creds.host_ca_keys),
                       user_ca_keys=tuple(answer.get("user_ca_keys") or creds.user_ca_keys))

    async def _use(self, creds: HostCredentials) -> None:
        if self.host_dir is not None:
            await asyncio.to_thread(creds.save, self.host_dir)
        self.credentials = creds
        for target in self.targets:
            await target(creds)
