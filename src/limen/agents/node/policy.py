"""Who may log in as what on this node: the ``AccessPolicy`` seam and its in-process form.

The node agent asks, for every session and forwarding request, ``check_ssh(identity, login)``
(RBAC with the node's labels) and ``session_options(identity)`` (the merged role options:
forwarding, file copy, idle timeout, recording mode). :class:`StoreAccessPolicy` evaluates it
over a :class:`RoleLookup`: the auth server's store in single-process mode, the auth API
through the tunnel for a separately run agent.

:class:`StoreAccessPolicy` reads the identity's roles from the store on every call, so a
changed role applies to the next session, and caches the compiled ``RoleSet`` per (role
revisions, traits). Identities of another cluster (trusted clusters) are refused unless a
``map_roles`` function maps them to local roles.

With a lock view (``limen.services.locks``) every call first asks it: a lock on the user, one of
the (mapped) roles, this server (``server_names``: its host id and hostname) or, for
``check_ssh``, the login raises :class:`~limen.services.locks.Locked`; under ``lock: strict``
a view too old to trust raises :class:`~limen.services.locks.LocksUnknown`. For an identity of a
trusted root cluster, ``foreign_locks`` is asked too, with the login: the root's own locks
that name a login (``limen.trust.root_locks``; the leaf proxy that relays root users'
sessions enforces the root's other locks, ``limen.proxy.trust_leaf_links``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from limen.api.resources import Kind, Resource
from limen.ca.identity import Identity
from limen.errors import AccessDenied
from limen.rbac import Decision, RoleSet, SessionOptions
from limen.rbac.decision import deny
from limen.services.locks import LockView

__all__ = ["AccessPolicy", "ForeignLocks", "RoleLookup", "StoreAccessPolicy"]

ForeignLocks = Callable[[Identity, str | None, bool], None]
"""``(identity of another cluster, login, strict)``: raises the refusal of that cluster's lock
(:class:`~limen.services.locks.Locked`, :class:`~limen.services.locks.LocksUnknown`)."""

_CacheKey = tuple[tuple[tuple[str, int], ...], tuple[tuple[str, tuple[str, ...]], ...]]


@runtime_checkable
class AccessPolicy(Protocol):
    async def check_ssh(self, identity: Identity, login: str) -> Decision:
        """May ``identity`` open a session as Unix ``login`` on this node?"""
        ...

    async def session_options(self, identity: Identity) -> SessionOptions:
        """The options merged over the identity's roles."""
        ...


class RoleLookup(Protocol):
    """Where roles come from: the auth server's ``ResourceStore`` in its own process, the auth
    API for a separately run agent (``limen.agents.node.remote_roles``)."""

    async def find(self, kind: Kind, name: str) -> Resource | None: ...


class StoreAccessPolicy:
    """:class:`AccessPolicy` over a :class:`ResourceStore` of roles (see the module doc)."""

    def __init__(self, store: RoleLookup,
                 node_labels: Mapping[str, str] | Callable[[], Mapping[str, str]], *,
                 cluster: str | None = None,
                 map_roles: Callable[[Identity], Sequence[str]] | None = None,
                 cache_size: int = 256, locks: LockView | None = None,
                 server_names: Sequence[str] = (),
                 foreign_locks: ForeignLocks | None = None) -> None:
        self.store = store
        self.locks = locks
        self.foreign_locks = foreign_locks
        self.server_names = tuple(server_names)
        if callable(node_labels):
            self._labels = node_labels
        else:
            static = dict(node_labels)
            self._labels = lambda: static
        self.cluster = cluster
        self.map_roles = map_roles
        self.cache_size = cache_size
        self._cache: OrderedDict[_CacheKey, RoleSet] = OrderedDict()

    def _role_names(self, identity: Identity) -> Sequence[str] | None:
        if self.cluster is None or identity.cluster == self.cluster:
            return identity.roles
        if self.map_roles is None:
            return None
        return self.map_roles(identity) or None  # mapped to nothing: refused as unmapped

    async def role_set(self, identity: Identity, *, login: str | None = None) -> RoleSet | None:
        """The identity's compiled roles; None for an unmapped foreign identity; Locked when
        a lock is in force on it here (as ``login`` when given)."""
        names = self._role_names(identity)
        if names is None:
            return None
        role_set = await self._compiled(identity, names)
        strict = role_set.options.lock == "strict"
        if self.locks is not None:
            self.locks.check(identity, roles=names, node=self.server_names, login=login,
                             strict=strict)
        if self.foreign_locks is not None and identity.cluster != self.cluster:
            self.foreign_locks(identity, login, strict)
        return role_set

    async def lock_refusal(self, identity: Identity) -> tuple[str | None, AccessDenied | None]:
        """The identity's lock mode here and the refusal a lock causes (None: no lock, no lock
        view, or an unmapped identity): what open sessions are re-checked with."""
        names = self._role_names(identity)
        if names is None or self.locks is None:
            return None, None
        mode = (await self._compiled(identity, names)).options.lock
        try:
            self.locks.check(identity, roles=names, node=self.server_names,
                             strict=mode == "strict")
        except AccessDenied as err:
            return mode, err
        return mode, None

    async def _compiled(self, identity: Identity, names: Sequence[str]) -> RoleSet:
        roles: list[Resource] = []
        for name in dict.fromkeys(names):
            role = await self.store.find(Kind.ROLE, name)
            if role is not None:
                roles.append(role)
        key: _CacheKey = (tuple((r.name, r.revision) for r in roles),
                          tuple(sorted((k, tuple(v)) for k, v in identity.traits.items())))
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        role_set = RoleSet.from_roles(roles, identity.traits)
        self._cache[key] = role_set
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return role_set

    async def check_ssh(self, identity: Identity, login: str) -> Decision:
        role_set = await self.role_set(identity, login=login)
        if role_set is None:
            return deny(None, "cluster", f"certificates of cluster {identity.cluster!r} are "
                                         "not mapped to roles of this cluster")
        return role_set.check_ssh(self._labels(), login)

    async def session_options(self, identity: Identity) -> SessionOptions:
        role_set = await self.role_set(identity)
        return (role_set or RoleSet(())).options
