"""A leaf's copy of its root clusters' locks, and the check of a root user against them.

::

    root proxy ──locks {revision, items}──▶ leaf proxy's cluster link (limen.proxy.trust_leaf_links)
                                              └─▶ RootLocks.update(root R, message)
                                                    one LockView per root: replaced, marked fresh
    a root user's dial at the leaf proxy ──▶ RootLocks.check(identity of cluster R, strict=...)
    its session at a node in the same process ──▶ RootLocks.check_login(identity, login):
                                                  the locks naming a login (the proxy cannot)

The root sends only locks naming a user, a role or a login and no node
(``limen.proxy.trust_root_locks``). A lock of root R applies to identities of cluster R only,
matched against the identity as R signed it: its user name and the roles of its ROOT
certificate (before the leaf's ``role_map``), so root R's lock on ``bob`` never touches a leaf
user named bob, and R's lock on role ``dev`` applies to R's users holding ``dev``. The leaf's own
locks keep applying to the mapped roles and the leaf's nodes (its node agents check them). A
lock naming a login matches only where the login is known: at a node agent that shares this
copy (one in the leaf proxy's process, :meth:`RootLocks.check_login`), not at the proxy, which
relays the SSH session sealed; the proxy enforces all the others, and the staleness rule.

Staleness follows the rule of agents apart from auth: the root pushes its locks on every
change and as a keepalive (every few seconds); when no message came from root R for
``max_staleness`` seconds (or none ever came), R's users in ``lock: strict`` mode are refused
with :class:`RootLocksUnknown`, and the others keep the last known locks. Every change of any
root's locks notifies :attr:`RootLocks.changed` (open sessions are re-checked:
``limen.trust.root_session_locks``). Fed and read by ``limen.proxy.trust_leaf_links``; read by
the node agent's access policy in the same process (``limen.cli.compose``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from limen.aio.changed import Changed
from limen.api.resources import Kind, Resource
from limen.ca.identity import Identity
from limen.errors import BadParameter
from limen.services.locks import DEFAULT_MAX_STALENESS, LocksUnknown, LockView
from limen.tunnel.protocol import Locks

__all__ = ["RootLocks", "RootLocksUnknown"]

log = logging.getLogger(__name__)


class RootLocksUnknown(LocksUnknown):
    """``lock: strict`` and the copy of root cluster R's locks is too old (or missing)."""

    def __init__(self, root: str) -> None:
        super().__init__()
        self.args = (f"cannot verify locks: root cluster {root!r} unreachable",)


class RootLocks:
    """See the module doc. ``clock``: monotonic seconds (tests pass their own)."""

    def __init__(self, *, max_staleness: float = DEFAULT_MAX_STALENESS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_staleness = max_staleness
        self._clock = clock
        self._views: dict[str, LockView] = {}
        self._login_views: dict[str, LockView] = {}
        """Per root, only its locks naming a login (what a node checks, :meth:`check_login`)."""
        self.changed = Changed()
        """Notified whenever the locks of any root change."""

    def view(self, root: str) -> LockView:
        """Root ``root``'s locks (an empty, stale view before its first message)."""
        view = self._views.get(root)
        if view is None:
            view = self._views[root] = LockView(max_staleness=self.max_staleness,
                                                clock=self._clock)
        return view

    def update(self, root: str, message: Locks) -> None:
        """The locks root ``root`` sent now: they replace the last copy, which is fresh."""
        resources = []
        for doc in message.items:
            try:
                resource = Resource.from_document(doc)
            except (BadParameter, AttributeError, KeyError, TypeError, ValueError) as err:
                log.warning("root locks: ignoring a malformed lock from %s: %s", root, err)
                continue
            if resource.kind is Kind.LOCK and "node" not in (resource.spec.get("target") or {}):
                resources.append(resource)
        view = self.view(root)
        before = view.current()
        view.replace(resources, message.revision)
        self._login_views.setdefault(root, LockView(max_staleness=None)).replace(
            [r for r in resources if "login" in (r.spec.get("target") or {})], message.revision)
        if view.current() != before:
            log.info("root locks: %d lock(s) of root %s in force here", len(view.current()),
                     root)
            self.changed.notify()

    @property
    def stale(self) -> bool:
        """True when the copy of some root's locks is stale."""
        return any(view.stale for view in self._views.values())

    def check(self, identity: Identity, *, strict: bool, login: str | None = None) -> None:
        """Raise :class:`~limen.services.locks.Locked` when a lock of the identity's (root)
        cluster targets its user or one of its root roles (as ``login``, when known: a lock
        naming a login matches only then); :class:`RootLocksUnknown` when ``strict`` and that
        root's copy is stale."""
        view = self.view(identity.cluster)
        if strict and view.stale:
            raise RootLocksUnknown(identity.cluster)
        view.check(identity, roles=identity.roles, login=login)

    def check_login(self, identity: Identity, login: str | None, strict: bool) -> None:
        """For a node agent sharing this copy (``ForeignLocks``): raise
        :class:`~limen.services.locks.Locked` for a lock of the identity's root that names
        ``login`` (and matches the rest). Only those: the proxy checks every other lock and
        the staleness on each session and cuts open ones, so each lock has one enforcer."""
        view = self._login_views.get(identity.cluster)
        if view is not None and login is not None:
            view.check(identity, roles=identity.roles, login=login)
