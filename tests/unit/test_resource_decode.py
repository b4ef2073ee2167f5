"""Reading a resource from the store decodes its JSON without a deep copy
(``Resource.from_document(..., owned=True)``): the result equals what a copying decode gives,
and no two reads, nor the store, share a spec. A caller's own document is still copied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from limen.api.resources import Kind, Resource
from limen.backend.factory import open_backend
from limen.services.resource_store import ResourceStore, encode

DOC: dict[str, Any] = {
    "apiVersion": "limen.dev/v1alpha1", "kind": "User",
    "metadata": {"name": "alice", "labels": {"team": "a"}},
    "spec": {"roles": ["dev"], "traits": {"logins": ["alice", "ubuntu"]}},
}


async def test_reads_share_nothing_and_equal_a_copying_decode(tmp_path: Path) -> None:
    backend = open_backend(tmp_path)
    try:
        store = ResourceStore(backend)
        created = await store.create(Resource.from_document(DOC))
        first = await store.get(Kind.USER, "alice")
        second = await store.get(Kind.USER, "alice")
        assert first == second == created
        assert first.spec is not second.spec
        assert first.spec["traits"] is not second.spec["traits"]
        first.spec["traits"]["logins"].append("root")  # type: ignore[index]
        assert (await store.get(Kind.USER, "alice")).spec["traits"]["logins"] == \
            ["alice", "ubuntu"]
        assert Resource.from_document(DOC).replace(revision=first.revision) == second
        assert encode(second) == encode(created)
    finally:
        await backend.close()


def test_a_callers_document_is_still_copied() -> None:
    doc: dict[str, Any] = {**DOC, "spec": {"roles": ["dev"]}}
    resource = Resource.from_document(doc)
    doc["spec"]["roles"].append("admin")
    assert resource.spec["roles"] == ["dev"]
