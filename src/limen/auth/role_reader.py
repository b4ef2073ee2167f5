"""Reads a user's roles for certificate issuance: from the backend on every call, decoded once
per stored content.

Every issuance reads each role it needs from the backend, so a role edited or removed
anywhere (another auth replica, ``lmctl`` on the data directory, the Git sync) counts from
the very next certificate: nothing here serves a role without asking the backend first.
What is saved is the work after the read: when the stored bytes of a role are exactly the
ones decoded last time, the :class:`~limen.api.resources.Resource` decoded then is handed out
again (its revision brought up to date) instead of parsing and deep-copying the JSON again.

The stored bytes travel with the resource (:class:`StoredRole`) because they are the cache
key of everything derived from the role (:mod:`limen.auth.grants`): equal bytes, equal role.
Called by :class:`limen.auth.core.AuthServer`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from limen.api.resources import Kind, Resource
from limen.backend.base import Backend
from limen.services.resource_store import resource_key

__all__ = ["RoleReader", "StoredRole"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredRole:
    """A role as read from the backend, with the exact bytes it was decoded from."""

    resource: Resource
    stored: bytes

    @property
    def name(self) -> str:
        return self.resource.name


class RoleReader:
    """Role lookups by name against one backend (see the module doc)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._decoded: dict[str, StoredRole] = {}
        """Role name -> the last content decoded for it (one entry per existing role)."""

    async def find(self, name: str) -> StoredRole | None:
        """The role named ``name`` as stored now (None: there is none)."""
        item = await self.backend.get(resource_key(Kind.ROLE, name))
        if item is None:
            self._decoded.pop(name, None)
            return None
        known = self._decoded.get(name)
        if known is not None and known.stored == item.value:
            if known.resource.revision == item.revision:
                return known
            known = StoredRole(known.resource.replace(revision=item.revision), item.value)
        else:
            resource = Resource.from_document(json.loads(item.value))
            known = StoredRole(resource.replace(revision=item.revision), item.value)
        self._decoded[name] = known
        return known

    async def read(self, names: Iterable[str], *, user: str) -> list[StoredRole]:
        """The roles ``user`` holds by these names, in order; a missing role is logged and
        left out (it grants nothing)."""
        roles = []
        for name in names:
            role = await self.find(name)
            if role is None:
                log.warning("user %s refers to missing role %s", user, name)
                continue
            roles.append(role)
        return roles
