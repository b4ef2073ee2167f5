"""``lmctl nodes ls``: the nodes online (agents that heartbeat through a proxy), like
``tctl nodes ls``. Registered on the ``lmctl`` group by ``limen.cli.lmctl``.
"""

from __future__ import annotations

import click

from limen.cli.common import OUTPUT_OPTION, emit_listing, handle_errors
from limen.cli.lmctl_format import NODE_HEADERS, node_rows
from limen.cli.lmctl_run import run_admin

__all__ = ["nodes"]


@click.group()
def nodes() -> None:
    """Nodes online: agents heartbeating through a proxy."""


@nodes.command("ls")
@OUTPUT_OPTION
@handle_errors
def nodes_ls(output: str) -> None:
    """Hostname, host id, address (or tunnel) and labels of every node online."""
    found = run_admin(lambda admin: admin.list_nodes())
    emit_listing(found, output, NODE_HEADERS, node_rows)
