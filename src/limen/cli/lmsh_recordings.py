"""``lmsh recordings ls``: the recorded sessions you may replay, newest first; and ``lmsh play``,
which replays one.

Asks the proxy's ``GET /v1/webapi/user/recordings`` (auth filters the list by your roles'
``session`` rules: with the ``access`` preset, the sessions you took part in) and prints a
table, or ``-o json|yaml``. Replay one with ``lmsh play SESSION [-o pty|text|json|yaml]``.
Both are registered on the ``lmsh`` group by ``limen.cli.lmsh`` (loaded when one of them runs).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors, print_table
from limen.client.webapi import get_as_current_user
from limen.errors import BadParameter
from limen.recording import FORMATS, Cast, parse_cast, render

__all__ = ["PLAY_OUTPUTS", "format_duration", "play", "recordings", "render_recording"]

PLAY_OUTPUTS = (*FORMATS, "yaml")
"""``lmsh play -o``: pty (timed replay), text (the output), json or yaml (the events)."""


def render_recording(cast: Cast, output: str, *, speed: float = 1.0) -> None:
    """Write ``cast`` to stdout as ``lmsh play -o OUTPUT`` shows it."""
    if output == "yaml":
        import yaml  # only for this output

        document = {"header": cast.header.to_dict(), "incomplete": cast.incomplete,
                    "events": [event.to_list() for event in cast.events]}
        click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=False), nl=False)
        return
    render(cast, output, sys.stdout.buffer, speed=speed)
    sys.stdout.buffer.flush()


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
    items = sorted(asyncio.run(get_as_current_user("recordings"))["items"],
                   key=lambda i: (i.get("start") or "", i["session_id"]), reverse=True)
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


@click.command()
@click.argument("session_id")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Replay speed.")
@click.option("-o", "--output", "--format", "output", type=click.Choice(PLAY_OUTPUTS),
              default="pty", show_default=True,
              help="pty: timed replay; text: the output; json or yaml: the events.")
@handle_errors
def play(session_id: str, speed: float, output: str) -> None:
    """Replay a recorded session you may read (your own with the access role; lmsh
    recordings ls lists them)."""
    if speed <= 0:
        raise BadParameter("--speed must be positive")
    answer = asyncio.run(get_as_current_user(f"recordings/{session_id}"))
    render_recording(parse_cast(answer["cast"].encode()), output, speed=speed)
