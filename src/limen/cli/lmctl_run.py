"""How every ``lmctl`` command reaches the cluster: ``run_admin`` opens the admin API the root
options (``--data-dir``, ``--auth``, ``-i``) name, runs one action, and closes it.

Called by the ``lmctl`` command modules (``limen.cli.lmctl``, ``lmctl_users``, ``lmctl_nodes``,
``lmctl_tokens``, ``lmctl_gitops``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from limen.api.durations import parse_duration
from limen.cli.admin_api import AdminApi, open_admin

__all__ = ["csv_list", "run_admin", "seconds"]

T = TypeVar("T")


def run_admin(action: Callable[[AdminApi], Awaitable[T]], *, data_dir: Path | None = None,
              bootstrap: bool = False) -> T:
    """Run ``action`` against the cluster of the root options (or of ``data_dir``).
    ``bootstrap``: a fresh directory may get a store (offline ``lmctl apply`` only)."""
    params = click.get_current_context().find_root().params

    async def runner() -> T:
        if data_dir is not None:
            async with open_admin(data_dir) as admin:
                return await action(admin)
        async with open_admin(params["data_dir"], params["auth"], params["identity"],
                              bootstrap=bootstrap) as admin:
            return await action(admin)

    return asyncio.run(runner())


def seconds(text: str) -> int:
    return int(parse_duration(text).total_seconds())


def csv_list(text: str) -> list[str]:
    """``a, b,,c`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]
