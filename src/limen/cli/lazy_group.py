"""A click group that imports a subcommand's module only when that subcommand runs.

``lmsh`` and ``lmctl`` are started for every single action, and OpenSSH starts
``lmsh proxy ssh`` for every ``ssh`` to a node: importing every command's dependencies
(aiohttp, asyncssh, jsonschema, GitPython, the auth server for offline work) on each start cost
more than the action itself. Each group names its subcommands as ``"module:attribute"``;
``--help`` of the group still lists them all (and then imports them, to show their help line).

Called by ``limen.cli.lmsh`` and ``limen.cli.lmctl``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

__all__ = ["LazyGroup"]


class LazyGroup(click.Group):
    """``lazy_commands``: subcommand name → ``"package.module:attribute"`` of a click command."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy_commands.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command
