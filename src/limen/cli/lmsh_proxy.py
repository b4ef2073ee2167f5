"""``lmsh proxy``: helpers for stock clients. ``lmsh proxy ssh`` is OpenSSH's ProxyCommand
(``lmsh config`` writes ``python -I -S .../limen/client/proxyssh_main.py``, and
``limen.cli.lmsh_entry`` serves ``lmsh proxy ssh --proxy P [--cluster C] TARGET`` before click
loads, both with ``limen.client.proxyssh_command``; this command takes every other spelling
and ``--help``, with ``limen.client.proxyssh_full``);
``lmsh proxy db`` is a local database listener (``limen.cli.lmsh_db``).

Registered on the ``lmsh`` group by ``limen.cli.lmsh`` (loaded when it runs).
"""

from __future__ import annotations

import sys

import click

from limen.cli.common import handle_errors
from limen.cli.lazy_group import LazyGroup
from limen.client.proxyssh_full import relay_ssh

__all__ = ["proxy"]


@click.group(cls=LazyGroup, lazy_commands={"db": "limen.cli.lmsh_db:proxy_db"})
def proxy() -> None:
    """Helpers for stock clients: OpenSSH's ProxyCommand, a local database listener."""


@proxy.command("ssh")
@click.option("--proxy", "proxy_address", help="Proxy web address (default: current profile).")
@click.option("--cluster", help="Cluster of the target (default: the profile's).")
@click.argument("target")
@handle_errors
def proxy_ssh(proxy_address: str | None, cluster: str | None, target: str) -> None:
    """Relay stdin/stdout to LOGIN@HOST:PORT through the proxy (used as ProxyCommand)."""
    sys.exit(relay_ssh(proxy_address, cluster, target))
