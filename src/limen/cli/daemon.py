"""The ``limen start`` process: composes auth, proxy and agents as the settings' roles ask.

::

    limen start ──▶ run_daemon(settings)
                      ├─ backend (SQLite in DATA_DIR)       [auth]
                      ├─ services, each start() → {listener: "host:port"}
                      ├─ DATA_DIR/listeners.json            once every listener is up
                      └─ wait for SIGTERM/SIGINT → stop() in reverse order

Called by ``limen.cli.limen``. Each component implements ``limen.aio.Service``; this module is
the only place that knows all of them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

from limen.aio.task_service import Service
from limen.config import Settings
from limen.files import private_dir

__all__ = ["run_daemon", "write_listeners"]


def write_listeners(data_dir: Path, listeners: dict[str, str]) -> Path:
    """Atomically write ``DATA_DIR/listeners.json`` (read by tests, scripts and ``lmctl``)."""
    path = data_dir / "listeners.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(listeners, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


async def run_daemon(
    settings: Settings,
    build_services: Callable[[Settings], list[Service]],
    *,
    echo: Callable[[str], None] = print,
    on_ready: Callable[[dict[str, str]], None] | None = None,
) -> None:
    private_dir(settings.data_dir)  # a volume root it does not own: checked, not changed
    (settings.data_dir / "listeners.json").unlink(missing_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: list[Service] = []
    try:
        listeners: dict[str, str] = {}
        for service in build_services(settings):
            opened = await service.start()
            started.append(service)
            for name, address in opened.items():
                echo(f"{name:<10} listening on {address}")
            listeners.update(opened)
        write_listeners(settings.data_dir, listeners)
        echo(f"limen is running (data in {settings.data_dir}); stop with Ctrl-C")
        if on_ready is not None:
            on_ready(listeners)
        await stop.wait()
    finally:
        for service in reversed(started):
            await service.stop()
        (settings.data_dir / "listeners.json").unlink(missing_ok=True)
