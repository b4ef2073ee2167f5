"""Rendering a recording for ``lmsh play``: ``text``, ``json`` and timed ``pty`` replay.

Called by ``lmsh play`` (and tests) with a parsed :class:`~limen.recording.asciicast.Cast`:

* ``text`` — the output stream concatenated: exactly the bytes the session printed;
* ``json`` — ``{"header": {...}, "events": [[time, code, data], ...]}``;
* ``pty``  — the output written with the recorded timing divided by ``speed`` (pauses longer
  than ``max_idle`` are shortened to it); ``sleep`` is injectable so tests need no clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import BinaryIO

from limen.errors import BadParameter
from limen.recording.asciicast import Cast, data_bytes

__all__ = ["FORMATS", "render"]

FORMATS = ("text", "json", "pty")


def render(cast: Cast, fmt: str, out: BinaryIO, *, speed: float = 1.0,
           max_idle: float | None = None,
           sleep: Callable[[float], None] = time.sleep) -> None:
    """Write ``cast`` to ``out`` in format ``fmt`` (see the module docstring)."""
    if fmt == "text":
        out.write(cast.output())
    elif fmt == "json":
        doc = {"header": cast.header.to_dict(), "incomplete": cast.incomplete,
               "events": [e.to_list() for e in cast.events]}
        out.write(json.dumps(doc, ensure_ascii=True).encode() + b"\n")
    elif fmt == "pty":
        _replay(cast, out, speed, max_idle, sleep)
    else:
        raise BadParameter(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    out.flush()


def _replay(cast: Cast, out: BinaryIO, speed: float, max_idle: float | None,
            sleep: Callable[[float], None]) -> None:
    if not speed > 0:
        raise BadParameter("speed must be a positive number")
    previous = 0.0
    for event in cast.events:
        if event.code != "o":
            continue
        delay = max(event.time - previous, 0.0)
        previous = event.time
        if max_idle is not None:
            delay = min(delay, max_idle)
        if delay > 0:
            sleep(delay / speed)
        out.write(data_bytes(event.data))
        out.flush()
