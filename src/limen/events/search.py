"""Search the audit log written by :class:`~limen.events.FileLog`.

Called by the auth API and ``lmctl audit search [--type T] [--since 1h] [-o json]``;
:func:`search_log` lets a log that searches itself (:class:`~limen.events.PostgresLog`, shared
by every auth replica) answer instead of the files.
:func:`search` returns matching events as dicts (the JSON written), ordered by time;
:func:`scan` returns the same plus how many lines were unreadable, for callers that report it.

Lines are hash-chained (:mod:`limen.events.chain`): the ``chain`` member is removed from the
events returned unless ``chain=True``, and checkpoint lines are not events (never returned,
never counted as skipped); :mod:`limen.events.verify` checks the chain.

Reading is tolerant: a torn line (an unclean shutdown cut a write short) or any other corrupt
line is skipped and counted, never fatal. When a writer appended a whole event to a torn
fragment that had no newline (``{"event":"user.lo{"event":"exec",...}``), the fragment is
counted as skipped and the whole event after it is still returned (``recovered``).
Only the daily files that can hold the requested time range are opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from limen.errors import BadParameter
from limen.events.chain import CHAIN_KEY, CHECKPOINT_KEY
from limen.events.codes import EventType
from limen.events.event import parse_time
from limen.events.filelog import day_files

__all__ = ["SearchResult", "SearchableLog", "event_type_filter", "parse_since", "scan", "search",
           "search_log"]

log = logging.getLogger(__name__)

_EVENT_START = '{"event":'
_CHECKPOINT_START = '{"checkpoint":'
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_TICK = timedelta(microseconds=1)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass
class SearchResult:
    """Matching events (oldest first unless ``descending``) and what could not be read."""

    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    """Lines that were torn or corrupt and were skipped."""
    recovered: int = 0
    """Events recovered from a line that began with a torn fragment."""
    files: int = 0
    """Daily files read."""


def search(
    log_dir: str | os.PathLike[str],
    types: Iterable[str] | str | None = None,
    user: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    *,
    descending: bool = False,
    chain: bool = False,
) -> list[dict[str, Any]]:
    """Events in ``log_dir`` matching every given filter, ordered by time.

    ``types``: event types or globs (``session.*``); ``user``: exact user name;
    ``since <= time < until`` (aware datetimes, see :func:`parse_since`); ``limit``: at most
    this many, the oldest (or the newest with ``descending=True``, newest first).
    ``chain``: keep each event's ``chain`` member (its place in the hash chain).
    Skipped lines are logged as a warning; use :func:`scan` to get the count.
    """
    result = scan(log_dir, types, user, since, until, limit, descending=descending,
                  chain=chain)
    if result.skipped:
        log.warning("audit search skipped %d torn or corrupt line(s) in %s",
                    result.skipped, log_dir)
    return result.events


@runtime_checkable
class SearchableLog(Protocol):
    """An audit log that answers searches itself (:class:`~limen.events.PostgresLog`: the
    events of every auth replica), with :func:`search`'s arguments and result."""

    async def search(
        self, types: Iterable[str] | str | None = None, user: str | None = None,
        since: datetime | None = None, until: datetime | None = None,
        limit: int | None = None, *, descending: bool = False, chain: bool = False,
    ) -> list[dict[str, Any]]: ...


async def search_log(
    emitter: object,
    log_dir: str | os.PathLike[str],
    types: Iterable[str] | str | None = None,
    user: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    *,
    descending: bool = False,
) -> list[dict[str, Any]]:
    """The events the auth server's audit log holds: asked to ``emitter`` when it is a
    :class:`SearchableLog`, else read from the day files in ``log_dir`` (a
    :class:`~limen.events.FileLog`'s, in a thread). Called by the auth API (``GET
    /v1/events``: ``lmctl audit search``)."""
    if isinstance(emitter, SearchableLog):
        return await emitter.search(types, user, since, until, limit, descending=descending)
    return await asyncio.to_thread(search, log_dir, types, user, since, until, limit,
                                   descending=descending)


def scan(
    log_dir: str | os.PathLike[str],
    types: Iterable[str] | str | None = None,
    user: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
    *,
    descending: bool = False,
    chain: bool = False,
) -> SearchResult:
    """Like :func:`search`, returning a :class:`SearchResult` with the skipped-line count."""
    wanted = event_type_filter(types)
    for name, bound in (("since", since), ("until", until)):
        if bound is not None and bound.tzinfo is None:
            raise BadParameter(f"{name} must be a timezone-aware datetime")
    if limit is not None and limit < 0:
        raise BadParameter("limit must not be negative")
    first_day = since.astimezone(UTC).date() if since is not None else date.min
    # until is exclusive: an until of midnight does not need that day's file
    last_day = (until.astimezone(UTC) - _TICK).date() if until is not None else date.max
    files = [path for day, path in day_files(log_dir) if first_day <= day <= last_day]
    if descending:
        files.reverse()

    result = SearchResult()
    matched: list[tuple[datetime, dict[str, Any]]] = []
    for path in files:
        if limit is not None and len(matched) >= limit:
            break  # a daily file holds exactly its day: later files cannot come earlier
        try:
            found = _read_file(path, wanted, user, since, until, result, chain)
        except FileNotFoundError:
            continue  # removed by retention while we listed
        found.sort(key=lambda item: item[0], reverse=descending)
        matched.extend(found)
    events = [event for _, event in matched]
    result.events = events if limit is None else events[:limit]
    return result


def _read_file(
    path: os.PathLike[str],
    wanted: frozenset[str] | None,
    user: str | None,
    since: datetime | None,
    until: datetime | None,
    result: SearchResult,
    chain: bool = False,
) -> list[tuple[datetime, dict[str, Any]]]:
    found: list[tuple[datetime, dict[str, Any]]] = []
    with open(path, "rb") as handle:
        result.files += 1
        for raw in handle:
            event, when = _parse_line(raw, result)
            if event is None or when is None:
                continue
            if not chain:
                event.pop(CHAIN_KEY, None)
            if wanted is not None and event["event"] not in wanted:
                continue
            if user is not None and event.get("user") != user:
                continue
            if (since is not None and when < since) or (until is not None and when >= until):
                continue
            found.append((when, event))
    return found


def event_type_filter(types: Iterable[str] | str | None) -> frozenset[str] | None:
    """The event types that ``types`` (names or globs such as ``session.*``) stand for;
    ``None`` for no filter. ``BadParameter`` for a name or glob that matches no type."""
    if types is None:
        return None
    names = [types] if isinstance(types, str) else list(types)
    known = [t.value for t in EventType]
    wanted: set[str] = set()
    for name in names:
        hits = fnmatch.filter(known, name) if any(c in name for c in "*?[") else (
            [name] if name in known else []
        )
        if not hits:
            raise BadParameter(f"unknown audit event type {name!r}")
        wanted.update(hits)
    return frozenset(wanted)


def _parse_line(
    raw: bytes, result: SearchResult
) -> tuple[dict[str, Any] | None, datetime | None]:
    """One line -> (event, its time), or (None, None) after counting it as skipped."""
    if not raw.strip():
        return None, None  # blank lines come from crash recovery; they are not damage
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        result.skipped += 1
        return None, None
    parsed = _as_event(text)
    if parsed is not None:
        return parsed
    if text.startswith(_CHECKPOINT_START):
        with contextlib.suppress(ValueError):
            if isinstance(json.loads(text).get(CHECKPOINT_KEY), dict):
                return None, None  # a checkpoint of the hash chain, not an event
    result.skipped += 1
    start = text.find(_EVENT_START, 1)
    while start != -1:  # a whole event glued after a torn fragment
        parsed = _as_event(text[start:])
        if parsed is not None:
            result.recovered += 1
            return parsed
        start = text.find(_EVENT_START, start + 1)
    return None, None


def _as_event(text: str) -> tuple[dict[str, Any], datetime] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not (isinstance(data, dict) and isinstance(data.get("event"), str)
            and isinstance(data.get("code"), str) and isinstance(data.get("time"), str)):
        return None
    try:
        return data, parse_time(data["time"])
    except BadParameter:
        return None


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``"30m"``, ``"1h"``, ``"2d"``, ``"1h30m"`` (before ``now``) or an ISO date/time.

    Units: ms, s, m, h, d, w. An ISO date means midnight UTC; an ISO time without an offset
    is UTC. Returns an aware UTC datetime; :class:`~limen.errors.BadParameter` otherwise.
    """
    spec = text.strip()
    if _DURATION.match(spec):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(spec))
        base = now if now is not None else datetime.now(UTC)
        if base.tzinfo is None:
            raise BadParameter("now must be a timezone-aware datetime")
        return base.astimezone(UTC) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(spec)
    except ValueError:
        raise BadParameter(
            f"invalid time {text!r}: use a duration such as 30m, 1h, 2d or an ISO date"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)
