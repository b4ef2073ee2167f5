"""A node's labels: the static ones from its settings plus command-generated (dynamic) ones.

``node.commands: [{name: kernel, command: [uname, -r], period: 1h}]`` runs ``uname -r`` at
start and then every period (no shell; a 10 s limit, or the period if shorter); the label
``kernel`` carries its trimmed standard output (at most 256 characters). A command that fails,
times out or prints nothing gives the value ``"?"`` until its next successful run, so a role
never matches on stale output by accident. Static labels win over a dynamic label of the same
name. The node heartbeats :meth:`DynamicLabels.current` and evaluates RBAC on it; both happen
per call, so a refreshed value applies to the next heartbeat and the next session. Called by
``limen.agents.node.node_service``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

from limen.aio.tasks import cancel_and_wait
from limen.config import LabelCommand

__all__ = ["FAILED_VALUE", "DynamicLabels"]

log = logging.getLogger(__name__)

FAILED_VALUE = "?"
MAX_VALUE = 256
COMMAND_TIMEOUT = 10.0


class DynamicLabels:
    def __init__(self, static: Mapping[str, str], commands: Sequence[LabelCommand] = ()) -> None:
        self.static = dict(static)
        self.commands = tuple(commands)
        self._values: dict[str, str] = {c.name: FAILED_VALUE for c in self.commands}
        self._tasks: list[asyncio.Task[None]] = []

    def current(self) -> dict[str, str]:
        return {**self._values, **self.static}

    async def start(self) -> None:
        """Run every command once (so the first heartbeat carries real values), then keep
        refreshing them in the background."""
        await asyncio.gather(*(self.refresh(c) for c in self.commands))
        self._tasks = [asyncio.create_task(self._loop(c), name=f"label {c.name}")
                       for c in self.commands]

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        self._tasks = []

    async def _loop(self, command: LabelCommand) -> None:
        while True:
            await asyncio.sleep(command.period_seconds)  # the refresh period
            await self.refresh(command)

    async def refresh(self, command: LabelCommand) -> str:
        self._values[command.name] = value = await _run(command)
        return value


async def _run(command: LabelCommand) -> str:
    try:
        process = await asyncio.create_subprocess_exec(
            *command.command, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    except OSError as err:
        log.warning("dynamic label %s: cannot run %s: %s", command.name, command.command[0],
                    err.strerror)
        return FAILED_VALUE
    try:
        async with asyncio.timeout(min(COMMAND_TIMEOUT, command.period_seconds)):
            output, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        log.warning("dynamic label %s: %s timed out", command.name, command.command[0])
        return FAILED_VALUE
    value = output.decode(errors="replace").strip()[:MAX_VALUE]
    if process.returncode != 0 or not value:
        log.warning("dynamic label %s: %s exited %s", command.name, command.command[0],
                    process.returncode)
        return FAILED_VALUE
    return value
