"""Check the audit log's hash chain and signed checkpoints; find the first broken link.

Called by ``lmctl audit verify`` (``limen.cli.lmctl_audit_verify``) with the public keys of
auth's JWT CA (by ``kid``), for day files and, through :mod:`limen.events.postgres_verify`,
for the days of the PostgreSQL log. Format: :mod:`limen.events.chain`. For each day file, line
by line:

* a line without a well-formed chain member is ``not-chained`` (edited, inserted, or written
  before the log was chained) — unless it is a torn line followed by the ``torn`` marker a
  writer leaves when it resumes after a crash (noted, not a failure);
* a line whose bytes no longer hash to its own chain value is ``edited``;
* a line whose chain position or ``prev`` does not follow the line before: ``missing`` (the
  position jumps ahead), ``reordered`` (the expected position is further down the file, or the
  position goes back) or ``edited`` (the line before was altered and re-hashed);
* a checkpoint must describe the chain it sits in (file, line count, head) and carry a valid
  signature by a known key: else ``bad-checkpoint``, ``bad-signature`` or ``unknown-key``;
* a checkpoint in which a writer recorded that the file was cut while it had it open
  (``shrunk``) is ``truncated``;
* the file must end in a signed sealing checkpoint (rotate, close, resume, torn): otherwise
  ``truncated`` (lines after the last signed checkpoint: cut short, or its writer crashed),
  or ``torn`` for a torn last line no writer resumed after — except for the newest file while
  a writer holds the log (``live``), whose tail is simply not signed yet.

Only the first problem of a file is reported: everything after it is unproven.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from limen.events.chain import (
    CHECKPOINT_KEY,
    SEALING_REASONS,
    ChainedLine,
    PublicKey,
    check_signature,
    seed_for,
)
from limen.events.filelog import WRITER_LOCK, day_files

__all__ = ["FileReport", "Problem", "verify_bytes", "verify_file", "verify_files",
           "writer_active"]


@dataclass(frozen=True)
class Problem:
    """The first broken link of a file: ``line`` is 1-based."""

    kind: str
    line: int
    message: str


@dataclass
class FileReport:
    path: Path
    lines: int = 0
    events: int = 0
    checkpoints: int = 0
    signed_through: int = 0
    """The line of the last checkpoint with a valid signature (0: none)."""
    unsigned_tail: int = 0
    """Lines after it (a live file's tail not checkpointed yet)."""
    kids: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    problem: Problem | None = None

    @property
    def intact(self) -> bool:
        return self.problem is None


def writer_active(directory: str | os.PathLike[str]) -> bool:
    """Whether a FileLog with a signer has ``directory`` open (it holds the writer lock)."""
    try:
        fd = os.open(Path(directory) / WRITER_LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock if we got it
    return False


def verify_files(
    directory: str | os.PathLike[str], keys: Mapping[str, PublicKey],
    paths: Sequence[Path] | None = None, *, live: bool | None = None,
) -> list[FileReport]:
    """Verify ``paths`` (default: every day file of ``directory``). ``live``: whether a writer
    has the log open (default: ask the writer lock); only the newest file may then end with
    lines after its last checkpoint."""
    all_files = [path for _, path in day_files(directory)]
    chosen = all_files if paths is None else list(paths)
    if live is None:
        live = writer_active(directory)
    newest = all_files[-1].name if all_files else None
    return [verify_file(path, keys, live=live and path.name == newest) for path in chosen]


def verify_file(path: Path, keys: Mapping[str, PublicKey], *, live: bool = False) -> FileReport:
    """Walk one day file's chain (see the module docstring)."""
    with open(path, "rb") as handle:
        data = handle.read()
    return verify_bytes(path, data, keys, live=live)


def verify_bytes(path: Path, data: bytes, keys: Mapping[str, PublicKey], *,
                 live: bool = False) -> FileReport:
    """Walk the chain of ``data``, the content of the day file ``path`` (its name seeds the
    chain; the PostgreSQL log hands its day's lines here as that file would hold them)."""
    report = FileReport(path)
    ends_with_newline = data.endswith(b"\n")
    raws = data.split(b"\n")
    if ends_with_newline or not data:
        raws.pop()  # the empty piece after the final newline
    report.lines = len(raws)
    parsed = [ChainedLine.parse(raw) for raw in raws]
    _Walk(report, keys, raws, parsed, live, ends_with_newline).run()
    return report


class _Walk:
    def __init__(self, report: FileReport, keys: Mapping[str, PublicKey], raws: list[bytes],
                 parsed: list[ChainedLine | None], live: bool, ends_with_newline: bool) -> None:
        self.report, self.keys, self.raws, self.parsed = report, keys, raws, parsed
        self.live, self.ends_with_newline = live, ends_with_newline
        self.seq, self.hash = 0, seed_for(report.path.name)
        self.last_chained = 0
        self.sealed = False
        """The last chained line is a signed sealing checkpoint."""
        self.torn: int | None = None
        """An unchained line waiting for the marker that must follow it."""

    def fail(self, kind: str, line: int, message: str) -> None:
        self.report.problem = Problem(kind, line, message)

    def run(self) -> None:
        for index, line in enumerate(self.parsed):
            number = index + 1
            if line is None:
                if self.torn is not None:
                    self._not_chained(self.torn)
                    return
                self.torn = number
                continue
            if not self._link(number, line):
                return
        if self.torn is not None:
            if self.torn == len(self.raws) and not self.ends_with_newline:
                if not self.live:
                    self.fail("torn", self.torn,
                              f"line {self.torn} is torn (an unclean shutdown cut it short) "
                              "and no writer has resumed the file since")
                else:
                    self.report.notes.append(f"line {self.torn} is torn; the writer resumes "
                                             "after it at its next write")
                return
            self._not_chained(self.torn)
            return
        self._check_end()

    def _not_chained(self, number: int) -> None:
        self.fail("not-chained", number,
                  f"line {number} carries no chain value: edited, inserted, or written before "
                  "the log was chained")

    def _link(self, number: int, line: ChainedLine) -> bool:
        if not line.intact:
            self.fail("edited", number,
                      f"line {number} was edited: its content does not match its chain value")
            return False
        doc = line.document()
        if doc is None:
            self.fail("edited", number, f"line {number} is not a JSON object")
            return False
        expected = self.seq + 1
        if line.seq != expected or line.prev != self.hash:
            self._explain_break(number, line, expected)
            return False
        checkpoint = doc.get(CHECKPOINT_KEY)
        if self.torn is not None:
            if not self._resumes_after_torn(number, checkpoint):
                self._not_chained(self.torn)
                return False
            self.report.notes.append(
                f"line {self.torn} is torn (unclean shutdown); the chain resumes at line "
                f"{number}")
            self.torn = None
        self.seq, self.hash, self.last_chained = line.seq, line.hash, number
        if isinstance(checkpoint, dict):
            return self._checkpoint(number, line, doc, checkpoint)
        if not isinstance(doc.get("event"), str):
            self.fail("edited", number, f"line {number} is neither an event nor a checkpoint")
            return False
        self.report.events += 1
        self.sealed = False
        return True

    def _resumes_after_torn(self, number: int, checkpoint: Any) -> bool:
        assert self.torn is not None
        if not isinstance(checkpoint, dict) or checkpoint.get("reason") != "torn":
            return False
        torn_raw = self.raws[self.torn - 1]
        return checkpoint.get("after") == {
            "sha256": hashlib.sha256(torn_raw).hexdigest(), "bytes": len(torn_raw)}

    def _explain_break(self, number: int, line: ChainedLine, expected: int) -> None:
        previous = self.last_chained
        if line.seq > expected:
            later = self._find_seq(expected, number)
            if later is not None:
                self.fail("reordered", number,
                          f"lines out of order: line {number} holds chain position {line.seq}, "
                          f"expected {expected} (found at line {later})")
            else:
                gap = line.seq - expected
                self.fail("missing", number,
                          f"{gap} line(s) missing before line {number}: the chain jumps from "
                          f"position {self.seq} (line {previous or 'start'}) to {line.seq}")
        elif line.seq < expected:
            self.fail("reordered", number,
                      f"line {number} holds chain position {line.seq}, expected {expected}: "
                      "lines moved or duplicated")
        else:
            where = f"line {previous}" if previous else "the file's start (another file's line?)"
            self.fail("edited", number,
                      f"line {number} does not follow {where}: that line was altered and "
                      "re-hashed, or replaced")

    def _find_seq(self, seq: int, after: int) -> int | None:
        for index in range(after, len(self.parsed)):
            candidate = self.parsed[index]
            if candidate is not None and candidate.seq == seq:
                return index + 1
        return None

    def _checkpoint(self, number: int, line: ChainedLine, doc: dict[str, Any],
                    claims: dict[str, Any]) -> bool:
        self.report.checkpoints += 1
        if (claims.get("file") != self.report.path.name or claims.get("lines") != line.seq - 1
                or claims.get("head") != line.prev):
            self.fail("bad-checkpoint", number,
                      f"checkpoint at line {number} does not describe this file's chain "
                      "(edited, or copied from another file)")
            return False
        shrunk = claims.get("shrunk")
        if isinstance(shrunk, dict):
            self.fail("truncated", number,
                      f"line {number}: the writer found this file cut from {shrunk.get('from')} "
                      f"to {shrunk.get('to')} bytes while it had it open (lines removed before "
                      "this line)")
            return False
        if claims.get("reason") == "resume":
            self.report.notes.append(f"line {number}: resumed after an unclean shutdown (lines "
                                     "after the previous checkpoint were not signed before it)")
        why = check_signature(doc, self.keys)
        if why == "unsigned" and claims.get("reason") == "torn":
            self.sealed = False  # a marker written before a key was available
            return True
        if why is not None:
            kind = "unknown-key" if why.startswith("unknown key") else "bad-signature"
            if why == "unsigned":
                why = "no signature"
            last = (f"the last valid checkpoint is at line {self.report.signed_through}"
                    if self.report.signed_through else "no earlier valid checkpoint")
            self.fail(kind, number,
                      f"checkpoint at line {number}: {why} (lines up to it may have been "
                      f"rewritten; {last})")
            return False
        self.report.signed_through = number
        self.report.kids.add(str(doc.get("kid")))
        self.sealed = claims.get("reason") in SEALING_REASONS
        return True

    def _check_end(self) -> None:
        report = self.report
        if not self.raws:
            return
        report.unsigned_tail = self.last_chained - report.signed_through
        if self.sealed and report.unsigned_tail == 0:
            return
        if self.live:
            if report.unsigned_tail:
                report.notes.append(f"{report.unsigned_tail} line(s) after the last checkpoint "
                                    "are not signed yet (the log is open)")
            return
        first = report.signed_through + 1
        if report.unsigned_tail == 0:
            self.fail("truncated", report.signed_through,
                      f"truncated after the last checkpoint: the file ends at the periodic "
                      f"checkpoint on line {report.signed_through}, not at a closing one "
                      "(later lines removed, or its writer crashed)")
            return
        self.fail("truncated", first,
                  f"truncated after the last checkpoint: lines {first}-{self.last_chained} "
                  f"follow the last signed checkpoint (line {report.signed_through or 'none'}) "
                  "and the file does not end with a closing checkpoint (its end was cut, or "
                  "its writer crashed)")
