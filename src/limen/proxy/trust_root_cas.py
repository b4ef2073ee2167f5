"""The root proxy's part of CA rotation at leaf clusters: this cluster's public CAs, signed, sent
to its leaves.

::

    auth GET /v1/trust/roots?revision=R (every ``interval`` s; "unchanged" is a short answer)
      user_ca, host_ca, tls_ca (every key each trusts now: both keys during a rotation)
        └─▶ RootCAPublisher: on a change of the CAs or of this proxy's host certificate
              make_update (limen.auth.trusted_clusters.ca_update): the CA set, signed by this
              proxy's SSH host key, with its host certificate
              └─▶ TunnelServer.publish_cas(cas {update}) ──▶ every leaf's cluster link (and
                  each link welcomed later), over the link's control channel (SSH, both ends
                  verified by host certificate, as the locks: ``limen.proxy.trust_root_locks``)

Only public parts travel (``CertAuthority.public_only`` on auth's side; ``CASet`` holds SSH
public keys and CA certificates). The leaf's proxy relays the update to the leaf's auth, which
checks the signature against this cluster's host CA as it trusts it and stores the set
(``limen.auth.trusted_clusters.leaf_cas``). A rotation's ``init`` reaches the leaves before
``update_clients`` gives users certificates of the new key, as long as the phases are a few
seconds apart; ``standby`` drops the old key there too. While auth does not answer, nothing
is sent (the leaves keep the last set). The set read is also what a leaf proxy sends its
roots (:attr:`RootCAPublisher.cas`, ``limen.proxy.trust_leaf_own_cas``). Started and stopped by
:class:`limen.proxy.sshproxy.ProxySSHService` with its tunnel listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from limen.aio.task_service import TaskService
from limen.auth.client import AuthClient
from limen.auth.trusted_clusters.ca_update import Direction, make_update
from limen.auth.trusted_clusters.wire import CASet
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.errors import BadParameter, LimenError
from limen.tunnel.protocol import RootCAs
from limen.tunnel.server import TunnelServer

__all__ = ["RootCAPublisher", "own_cas"]

log = logging.getLogger(__name__)

TRUST_PATH = "/v1/trust/roots"
"""Auth's trust answer, which carries this cluster's own CAs (``limen.auth.http.trust_leaf``;
named here, not imported: this root-side module imports nothing of the leaf side)."""
_FIELDS = {CertAuthorityType.USER: "user_ca", CertAuthorityType.HOST: "host_ca",
           CertAuthorityType.TLS: "tls_ca"}


def own_cas(answer: Mapping[str, Any], cluster: str) -> CASet:
    """This cluster's public user, host and TLS CAs from auth's trust answer;
    :class:`BadParameter` when one is missing, of another cluster or type, or private."""
    cas = {}
    for ca_type, field in _FIELDS.items():
        doc = answer.get(field)
        if not isinstance(doc, Mapping):
            raise BadParameter(f"auth's trust answer has no {field}")
        ca = CertAuthority.from_dict(doc)
        if ca.cluster != cluster or ca.type is not ca_type or ca.has_private_key:
            raise BadParameter(f"auth's {field} is not this cluster's public {ca_type} CA")
        cas[ca_type] = ca
    return CASet.of(cas)


class RootCAPublisher(TaskService):
    """See the module doc. ``credentials()``: this proxy's host credentials now (they change
    when the host CA rotates)."""

    name = "root-cas"

    def __init__(self, auth: AuthClient, tunnel: TunnelServer,
                 credentials: Callable[[], HostCredentials], *, interval: float = 1.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.auth = auth
        self.tunnel = tunnel
        self.credentials = credentials
        self.interval = interval
        self.clock = clock
        self._revision = ""
        self._cas: CASet | None = None
        self._published: tuple[CASet, bytes] | None = None

    @property
    def cas(self) -> CASet | None:
        """This cluster's public CAs as last read from auth (None before the first answer):
        a leaf proxy sends the same set to its roots (``limen.proxy.trust_leaf_own_cas``)."""
        return self._cas

    async def publish_once(self) -> bool:
        """Ask auth once; send the CAs when they or this proxy's certificate changed (True)."""
        creds = self.credentials()
        answer = await self.auth.call("GET", TRUST_PATH, params=(
            {"revision": self._revision} if self._revision and self._cas else None))
        if not isinstance(answer, dict):
            raise BadParameter("auth's trust answer is not an object")
        if not answer.get("unchanged"):
            self._cas = own_cas(answer, creds.cluster)
            self._revision = str(answer.get("revision") or "")
        assert self._cas is not None
        state = (self._cas, creds.ssh_cert)
        if state == self._published:
            return False
        self.tunnel.publish_cas(RootCAs(update=make_update(
            creds, self._cas, self.clock(), Direction.ROOT_TO_LEAF)))
        self._published = state
        log.info("root CAs: sent to the leaves (user %d, host %d key(s))",
                 len(self._cas.user), len(self._cas.host))
        return True

    async def _run(self) -> None:
        warned = False
        while True:
            try:
                await self.publish_once()
                warned = False
            except asyncio.CancelledError:
                raise
            except (LimenError, OSError, TimeoutError, ValueError) as err:
                if not warned:
                    log.warning("root CAs: cannot read this cluster's CAs from auth (%s); "
                                "the leaves keep the last ones sent", err)
                warned = True
            await asyncio.sleep(self.interval)
