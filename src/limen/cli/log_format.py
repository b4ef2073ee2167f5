"""How ``limen`` writes its log: ``--log-format text`` (one line for a terminal) or ``json``
(one object per line for a collector)::

    text  2026-12-06 18:30:00,123 INFO limen.tunnel.server: tunnel: agent ... connected
    json  {"time": "2026-12-06T18:30:00.123Z", "level": "info", "logger": "limen.tunnel.server",
           "message": "tunnel: agent ... connected", ...structured fields...}

Structured fields are what a call passes in ``extra=``; their names are the audit events'
where they overlap (``user``, ``session_id``, ``remote_addr``, ...), and they go through the
audit scrubber (``limen.events.scrub``), so a field named like a secret is written as
``[REDACTED]``. An exception is one ``exception`` string. Called by ``limen.cli.limen`` (the
``limen`` group: ``limen start`` and ``limen operator``).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from limen.events.scrub import scrub

__all__ = ["LOG_FORMATS", "JSONFormatter", "configure_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object per record (see the module doc)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = {k: v for k, v in vars(record).items()
                 if k not in _STANDARD and not k.startswith("_")}
        if extra:
            clean, _scrubbed = scrub(extra)
            out.update({k: v for k, v in clean.items() if k not in out})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(*, debug: bool, log_format: str) -> None:
    """The root logger's one handler on stderr, in ``log_format``; asyncssh's chatter only
    with ``debug``."""
    handler = logging.StreamHandler()
    handler.setFormatter(JSONFormatter() if log_format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
