"""``lmsh clusters``: the root cluster and every leaf the user's roles' ``cluster_labels`` allow,
online or offline; it also remembers the leaves (profile, known_hosts) for ``lmsh config`` and
``lmsh ssh --cluster``. Registered on the ``lmsh`` group by ``limen.cli.lmsh``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors, print_table
from limen.client.clusters import cluster_rows, refresh_clusters
from limen.client.profile import Profile, ProfileStore

__all__ = ["clusters", "current_leaves"]


def current_leaves(store: ProfileStore) -> tuple[Profile, list[dict[str, Any]]]:
    """The valid current profile, refreshed with the leaves the root says it may reach."""
    return asyncio.run(refresh_clusters(store, store.current_valid()))


@click.command()
@OUTPUT_OPTION
@handle_errors
def clusters(output: str) -> None:
    """The clusters you can reach: your root cluster and its leaves (trusted clusters)."""
    profile, leaves = current_leaves(ProfileStore())
    rows = cluster_rows(profile, leaves)
    if output != "text":
        emit_documents(rows, output, as_list=True)
        return
    print_table(["Cluster Name", "Type", "Status", "Labels", "Selected"], [
        (r["name"], r["type"], r["connection"],
         ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())),
         "*" if r["selected"] else "") for r in rows])
