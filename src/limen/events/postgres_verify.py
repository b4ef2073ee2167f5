"""Check the chains of the PostgreSQL audit log: each day's lines, read back in chain order
as the day file would hold them, go through the file verifier (:mod:`limen.events.verify`),
then the day's chain head row must name its last line.

Called by ``lmctl audit verify --postgres`` (``limen.cli.lmctl_audit_verify``). Which days are
live: today's, and the one before for ``LIVE_GRACE`` after midnight (a replica seals a day
that ended at its next tick): their lines after the last signed checkpoint are noted, not
failures. An earlier day must end with a signed sealing checkpoint, as a closed file must.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from limen.events.chain import ChainedLine, PublicKey
from limen.events.filelog import day_file_name
from limen.events.postgres_log import PostgresLog
from limen.events.postgres_log_sql import ChainHead
from limen.events.verify import FileReport, Problem, verify_bytes

__all__ = ["LIVE_GRACE", "verify_postgres"]

LIVE_GRACE = timedelta(minutes=5)
"""How long after midnight (UTC) the day that ended still counts as live."""


def verify_postgres(log: PostgresLog, keys: Mapping[str, PublicKey],
                    days: Sequence[date] | None = None, *,
                    now: datetime | None = None) -> list[FileReport]:
    """A report per day (default: every day with a chain), named after its day file."""
    chosen = log.days() if days is None else list(days)
    live_from = ((now or datetime.now(UTC)) - LIVE_GRACE).astimezone(UTC).date()
    reports: list[FileReport] = []
    for day in chosen:
        head, lines = log.read_day(day)
        data = "".join(line + "\n" for line in lines).encode()
        report = verify_bytes(Path(day_file_name(day)), data, keys, live=day >= live_from)
        if report.intact:
            report.problem = _head_problem(head, lines)
        reports.append(report)
    return reports


def _head_problem(head: ChainHead | None, lines: list[str]) -> Problem | None:
    """Whether the chain's head row (position and hash) names the day's last line."""
    if not lines:
        return None
    count = len(lines)
    last = ChainedLine.parse(lines[-1].encode())
    if last is None:
        return None  # a torn last line: the walk has judged it already
    if head is None:
        return Problem("edited", count, "the day's chain head row is missing (removed, or "
                       "the lines were inserted by hand)")
    if head.seq > last.seq:
        return Problem("truncated", count,
                       f"the chain's head records {head.seq} line(s) but the table ends at "
                       f"chain position {last.seq}: lines were deleted from its end")
    if head.seq != last.seq or head.hash != last.hash:
        return Problem("edited", count, f"line {count} is not the chain's head (position "
                       f"{head.seq}): the lines or the head row were altered")
    return None
