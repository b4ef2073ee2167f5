"""The root proxy's part of locks at leaf clusters: this cluster's locks pushed to its leaves.

::

    auth GET /v1/locks?after=R&wait=W (long poll) ──▶ RootLockPublisher
        └─▶ TunnelServer.publish_locks(locks {revision, items})
              ──▶ every leaf's cluster link, over the link's control channel (SSH, both ends
                  verified by host certificate: the leaf's proxy by the leaf's host CA stored
                  at the trusted-cluster handshake, this proxy by this cluster's host CA)

Only what a leaf needs is sent: locks naming a user, a role or a login and no node (a node
lock here is about this cluster's nodes; a leaf's nodes are locked by the leaf's own locks).
A leaf asks for nothing (a cluster link may not ask the root for anything,
``limen.tunnel.clusters``): the root sends at once on every change, to each link when it is
welcomed, and after every answer of the long poll (at least every ``wait`` seconds) as a
keepalive, so the leaf knows its copy is fresh. While auth does not answer, nothing is sent
and the leaves' copies grow stale (``limen.trust.root_locks``). Started and stopped by
:class:`limen.proxy.sshproxy.ProxySSHService` with its tunnel listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from limen.aio.task_service import TaskService
from limen.auth.client import AuthClient
from limen.errors import LimenError
from limen.tunnel.protocol import Locks
from limen.tunnel.server import TunnelServer

__all__ = ["RootLockPublisher", "for_leaves"]

log = logging.getLogger(__name__)

_USER_FIELDS = ("user", "role", "login")


def for_leaves(items: Iterable[Any]) -> tuple[Mapping[str, Any], ...]:
    """The Lock documents that can concern this cluster's users at a leaf, reduced to what the
    leaf enforces (name, target, message, expiry: no labels, annotations or origin)."""
    chosen = []
    for doc in items:
        spec = doc.get("spec") if isinstance(doc, Mapping) else None
        if not isinstance(doc, Mapping) or not isinstance(spec, Mapping):
            continue
        target, meta = spec.get("target"), doc.get("metadata")
        if not (isinstance(target, Mapping) and "node" not in target
                and any(target.get(key) for key in _USER_FIELDS)):
            continue
        chosen.append({
            "apiVersion": doc.get("apiVersion"), "kind": doc.get("kind"),
            "metadata": {"name": meta.get("name") if isinstance(meta, Mapping) else None},
            "spec": {key: spec[key] for key in ("target", "message", "expires") if key in spec}})
    return tuple(chosen)


class RootLockPublisher(TaskService):
    """See the module doc."""

    name = "root-locks"

    def __init__(self, auth: AuthClient, tunnel: TunnelServer, *, wait: float = 5.0,
                 retry: float = 0.5) -> None:
        self.auth = auth
        self.tunnel = tunnel
        self.wait = wait
        self.retry = retry

    async def publish_once(self, after: int = 0, wait: float = 0.0) -> int:
        """One request to auth, its answer sent to every leaf; the answer's revision."""
        answer = await self.auth.call("GET", "/v1/locks", params={
            "after": str(after), "wait": str(int(wait))})
        revision = int(answer.get("revision") or 0)
        self.tunnel.publish_locks(Locks(revision=revision,
                                        items=for_leaves(answer.get("items") or [])))
        return revision

    async def _run(self) -> None:
        revision, answered, warned = 0, False, False
        while True:
            try:  # at once at the start and after a failure, then a long poll
                revision = await self.publish_once(revision, self.wait if answered else 0.0)
                if warned:
                    log.info("root locks: auth answers again; the leaves get the locks")
                answered, warned = True, False
                continue
            except asyncio.CancelledError:
                raise
            except (LimenError, OSError, TimeoutError, ValueError, AttributeError) as err:
                if not warned:
                    log.warning("root locks: cannot read the locks from auth (%s); leaves "
                                "keep their last copy", err)
                answered, warned = False, True
            await asyncio.sleep(self.retry)
