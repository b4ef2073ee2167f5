"""Roles for a node agent started apart from auth: read from the auth API through the tunnel.

:class:`AuthRoleLookup` is the :class:`~limen.agents.node.policy.RoleLookup` of such a node:
every session's check reads the identity's roles (``GET /v1/resources/roles/<name>``), so a
role changed in Git applies to the next session, as on the single-node default. When auth
cannot be reached the lookup raises, and the node refuses the session (deny by default).
Called by ``limen.cli.process``.
"""

from __future__ import annotations

from limen.agents.auth_link import AuthLink
from limen.api.resources import Kind, Resource
from limen.errors import NotFound

__all__ = ["AuthRoleLookup"]


class AuthRoleLookup:
    def __init__(self, link: AuthLink) -> None:
        self.link = link

    async def find(self, kind: Kind, name: str) -> Resource | None:
        client = await self.link.client()
        try:
            document = await client.get(kind.plural, name)
        except NotFound:
            return None
        return Resource.from_document(document)
