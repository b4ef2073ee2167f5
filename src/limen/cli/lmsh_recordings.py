"""``lmsh recordings ls``: the recorded sessions you may replay, newest first; and the
output formats of ``lmsh play`` (``render_recording``).

Asks the proxy's ``GET /v1/webapi/user/recordings`` (auth filters the list by your roles'
``session`` rules: with the ``access`` preset, the sessions you took part in) and prints a
table, or ``-o json|yaml``. Replay one with ``lmsh play SESSION [-o pty|text|json|yaml]``.
``recordings`` is registered on the ``lmsh`` group by ``limen.cli.lmsh``; ``lmsh play``
lives in ``limen.cli.lmsh_access``.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime
from typing import Any

import click
import yaml

from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors, print_table
from limen.client.profile import ProfileStore
from limen.client.webapi import WebApi
from limen.recording import FORMATS, Cast, render

__all__ = ["PLAY_OUTPUTS", "format_duration", "recordings", "render_recording"]

PLAY_OUTPUTS = (*FORMATS, "yaml")
"""``lmsh play -o``: pty (timed replay), text (the output), json or yaml (the events)."""


def render_recording(cast: Cast, output: str, *, speed: float = 1.0) -> None:
    """Write ``cast`` to stdout as ``lmsh play -o OUTPUT`` shows it."""
    if output == "yaml":
        document = {"header": cast.header.to_dict(), "incomplete": cast.incomplete,
                    "events": [event.to_list() for event in cast.events]}
        click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=False), nl=False)
        return
    render(cast, output, sys.stdout.buffer, speed=speed)
    sys.stdout.buffer.flush()


async def _list() -> list[dict[str, Any]]:
    store = ProfileStore()
    api = WebApi.for_profile(store, store.current())
    try:
        answer = await api.as_user("recordings")
    finally:
        await api.close()
    return list(answer["items"])


def format_duration(seconds: float | None) -> str:
    """``1h02m03s``, ``4m05s``, ``6s``; ``-`` when unknown (an incomplete recording)."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _started(value: str) -> str:
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value or "-"


@click.group()
def recordings() -> None:
    """Recorded sessions (replay one with lmsh play SESSION)."""


@recordings.command("ls")
@OUTPUT_OPTION
@handle_errors
def ls(output: str) -> None:
    """The recorded sessions you may replay, newest first."""
    items = sorted(asyncio.run(_list()), key=lambda i: (i.get("start") or "", i["session_id"]),
                   reverse=True)
    if output != "text":
        emit_documents(items, output, as_list=True)
        return
    if not items:
        click.echo("no recorded session you may replay", err=True)
        return
    print_table(["SESSION", "USER", "NODE", "LOGIN", "STARTED", "DURATION"], [
        (i["session_id"], i.get("user") or "-", i.get("node") or "-", i.get("login") or "-",
         _started(i.get("start") or ""),
         format_duration(i.get("duration_seconds")) + (" (incomplete)"
                                                       if i.get("incomplete") else ""))
        for i in items])
