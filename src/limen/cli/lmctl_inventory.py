"""``lmctl inventory export``: what the cluster holds, for an offline access review.

Prints the inventory (:mod:`limen.gitops.access_diff_inventory`) of the cluster: users with
their roles and traits, roles, Resources (stored, or served by an agent from its own
configuration), trusted and leaf clusters, and the nodes online with their last heartbeated
labels. ``lmctl gitops plan PATH --access --inventory FILE``
reads it back with no network access. Registered on the ``lmctl`` group by
``limen.cli.lmctl``.
"""

from __future__ import annotations

from typing import Any

import click

from limen.api.resources import Kind, Resource
from limen.cli.admin_api import AdminApi
from limen.cli.admin_protocol import ONLINE_KINDS
from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors
from limen.cli.lmctl_run import run_admin
from limen.gitops.access_diff_inventory import INVENTORY_KINDS, inventory_document

__all__ = ["collect_inventory", "inventory"]


@click.group()
def inventory() -> None:
    """What the cluster holds (users, roles, resources, nodes), for offline checks."""


async def collect_inventory(admin: AdminApi) -> dict[str, Any]:
    """The inventory document of the cluster ``admin`` talks to: the stored objects, plus the
    databases, Kubernetes clusters and apps that agents serve from their own configuration
    (known only from their heartbeats), and the nodes online."""
    objects: list[Resource] = []
    for kind in INVENTORY_KINDS:
        objects.extend(Resource.from_document(doc) for doc in await admin.list_kind(kind.value))
    stored = {r.name for r in objects if r.kind is Kind.RESOURCE}
    for online in ONLINE_KINDS:
        for record in await admin.list_online(online):
            served = Resource.from_document(record["resource"])
            if served.kind is Kind.RESOURCE and served.name not in stored:
                stored.add(served.name)  # one per name, however many agents serve it
                objects.append(served)
    return inventory_document(objects, await admin.list_nodes())


@inventory.command("export")
@OUTPUT_OPTION
@handle_errors
def export(output: str) -> None:
    """Print the inventory (-o json or yaml; text is yaml)."""
    document = run_admin(collect_inventory)
    emit_documents([document], "json" if output == "json" else "yaml")
