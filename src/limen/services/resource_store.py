"""Typed storage of Limen resources over a ``Backend``: one key per object.

Keys are ``/resources/<Kind>/<name>``; values are the object's JSON document. The stored
revision is the backend item's revision, exposed as ``Resource.revision`` (and as
``metadata.resourceVersion`` in documents). Called by the auth server, the apply/GitOps code
and ``lmctl`` when it opens a data directory directly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from limen.api.resources import Kind, Resource
from limen.backend.base import Backend, EventType, Item
from limen.errors import AlreadyExists, CompareFailed, NotFound
from limen.services.ownership import object_label

T = TypeVar("T")

__all__ = ["RESOURCE_PREFIX", "ResourceChange", "ResourceStore", "resource_key", "translated"]

RESOURCE_PREFIX = "/resources/"


def resource_key(kind: Kind, name: str) -> str:
    return f"{RESOURCE_PREFIX}{kind.value}/{name}"


async def translated(kind: Kind, name: str, call: Awaitable[T], *,
                     creating: bool = False) -> T:
    """Await a backend write on one object's key and say what went wrong in the object's
    words: ``user 'me' already exists``, never the backend key. The one place where the
    store's conflict and not-found errors become messages a person reads."""
    label = object_label(kind, name)
    try:
        return await call
    except AlreadyExists:
        raise AlreadyExists(f"{label} already exists") from None
    except NotFound:
        raise NotFound(f"{label} not found") from None
    except CompareFailed:
        if creating:
            raise AlreadyExists(f"{label} already exists") from None
        raise CompareFailed(f"{label} was changed or deleted meanwhile; nothing was written, "
                            "try again") from None


def _decode(item: Item) -> Resource:
    # The dict json.loads just made is the Resource's own: no deep copy of it.
    return Resource.from_document(json.loads(item.value), owned=True).replace(
        revision=item.revision)


def encode(resource: Resource) -> bytes:
    """The stored form: the document without ``resourceVersion`` (the backend keeps that)."""
    return resource.replace(revision=0).to_json()


class ResourceChange:
    """A watched change: ``resource`` is the new object, or the last known name for deletes."""

    __slots__ = ("deleted", "kind", "name", "resource", "revision")

    def __init__(
        self, kind: Kind, name: str, revision: int, resource: Resource | None
    ) -> None:
        self.kind, self.name, self.revision, self.resource = kind, name, revision, resource
        self.deleted = resource is None


class ResourceStore:
    """CRUD over resources; all-or-nothing writes go through ``limen.services.apply``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def get(self, kind: Kind, name: str) -> Resource:
        item = await self.backend.get(resource_key(kind, name))
        if item is None:
            raise NotFound(f"{object_label(kind, name)} not found")
        return _decode(item)

    async def find(self, kind: Kind, name: str) -> Resource | None:
        item = await self.backend.get(resource_key(kind, name))
        return None if item is None else _decode(item)

    async def list(self, kind: Kind | None = None) -> list[Resource]:
        prefix = RESOURCE_PREFIX + (f"{kind.value}/" if kind else "")
        return [_decode(item) for item in await self.backend.list(prefix)]

    async def create(self, resource: Resource, *, expires: float | None = None) -> Resource:
        item = await translated(resource.kind, resource.name, self.backend.create(
            resource_key(resource.kind, resource.name), encode(resource), expires=expires))
        return resource.replace(revision=item.revision)

    async def put(self, resource: Resource, *, expires: float | None = None) -> Resource:
        item = await self.backend.put(
            resource_key(resource.kind, resource.name), encode(resource), expires=expires
        )
        return resource.replace(revision=item.revision)

    async def update(self, resource: Resource, *, expires: float | None = None) -> Resource:
        """Compare-and-swap against ``resource.revision`` (0 = must not exist yet)."""
        item = await translated(resource.kind, resource.name, self.backend.compare_and_swap(
            resource_key(resource.kind, resource.name), resource.revision, encode(resource),
            expires=expires), creating=resource.revision == 0)
        return resource.replace(revision=item.revision)

    async def delete(self, kind: Kind, name: str) -> None:
        await translated(kind, name, self.backend.delete(resource_key(kind, name)))

    async def watch(
        self, kind: Kind | None = None, *, after: int | None = None
    ) -> AsyncIterator[ResourceChange]:
        prefix = RESOURCE_PREFIX + (f"{kind.value}/" if kind else "")
        async for event in self.backend.watch(prefix, after=after):
            kind_name, _, name = event.key[len(RESOURCE_PREFIX):].partition("/")
            resource = None
            if event.type is EventType.PUT:
                resource = Resource.from_document(json.loads(event.value)).replace(
                    revision=event.revision
                )
            yield ResourceChange(Kind(kind_name), name, event.revision, resource)
