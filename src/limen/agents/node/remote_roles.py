"""Roles for a node agent started apart from auth: read from the auth API through the tunnel.

:class:`AuthRoleLookup` is the :class:`~limen.agents.node.policy.RoleLookup` of such a node:
a session's check reads the identity's roles (``GET /v1/resources/roles/<name>``), so a role
changed in Git applies to the next session, as on the single-node default. An answer is reused
for ``max_age`` (1 s) so that a burst of sessions, or the ``lock: strict`` re-checks of many
open sessions, cost one request per role and second. When auth cannot be reached the lookup
raises and the node refuses the session (deny by default). Called by ``limen.cli.compose``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from limen.agents.auth_link import AuthLink
from limen.api.resources import Kind, Resource
from limen.errors import NotFound

__all__ = ["AuthRoleLookup"]


class AuthRoleLookup:
    def __init__(self, link: AuthLink, *, max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.link = link
        self.max_age = max_age
        self._clock = clock
        self._cache: dict[tuple[Kind, str], tuple[float, Resource | None]] = {}

    async def find(self, kind: Kind, name: str) -> Resource | None:
        now = self._clock()
        cached = self._cache.get((kind, name))
        if cached is not None and now - cached[0] < self.max_age:
            return cached[1]
        client = await self.link.client()
        try:
            found: Resource | None = Resource.from_document(await client.get(kind.plural, name))
        except NotFound:
            found = None
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[(kind, name)] = (now, found)
        return found
