"""The audit log's hash chain and signed checkpoints: what FileLog writes, what verify finds
(an edited field, a deleted, moved or inserted line, a truncated file, a forged checkpoint, a
torn last line and the resume after it), and that search hides it."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.events import AuditEvent, FileLog, make_event, scan
from limen.events.chain import (
    ChainedLine,
    KeySigner,
    chain_line,
    chain_lines,
    checkpoint_body,
    link_hash,
    seed_for,
)
from limen.events.verify import FileReport, verify_file, verify_files, writer_active

DAY = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NAME = "2026-11-24.jsonl"
KEY = ec.generate_private_key(ec.SECP256R1())
SIGNER = KeySigner(KEY, "auth-key")
KEYS = {"auth-key": KEY.public_key()}


def write_log(directory: Path, count: int = 5, **options: Any) -> Path:
    with FileLog(directory, fsync=False, signer=lambda: SIGNER, **options) as log:
        for n in range(count):
            log.write(make_event("user.login", time=DAY, user=f"user{n}", n=n))
    return directory / NAME


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def raw_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def rewrite(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def verify(path: Path, keys: dict[str, Any] | None = None) -> FileReport:
    return verify_file(path, keys if keys is not None else KEYS)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.005)  # polling a condition with a deadline, not timing


# -- what is written ------------------------------------------------------------------------


def test_every_line_is_chained_and_the_file_ends_with_a_signed_close(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    lines = rows(path)
    assert [line["chain"]["seq"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[0]["chain"]["prev"] == seed_for(NAME)
    for before, after in itertools.pairwise(lines):
        assert after["chain"]["prev"] == before["chain"]["hash"]
    closing = lines[-1]
    assert closing["checkpoint"] == {
        "v": 1, "reason": "close", "file": NAME, "lines": 5,
        "head": lines[4]["chain"]["hash"], "time": closing["checkpoint"]["time"],
    }
    assert (closing["kid"], closing["alg"]) == ("auth-key", "ES256")
    report = verify(path)
    assert report.intact, report.problem
    assert (report.lines, report.events, report.checkpoints, report.signed_through) == (6, 5, 1, 6)


def test_search_hides_the_chain_and_skips_checkpoints(tmp_path: Path) -> None:
    write_log(tmp_path, checkpoint_every=2)
    result = scan(tmp_path)
    assert [e["n"] for e in result.events] == [0, 1, 2, 3, 4]
    assert (result.skipped, result.recovered) == (0, 0)
    assert all("chain" not in e for e in result.events)
    assert all("seq" in e["chain"] for e in scan(tmp_path, chain=True).events)


def test_checkpoint_every_n_lines(tmp_path: Path) -> None:
    path = write_log(tmp_path, count=7, checkpoint_every=3)
    reasons = [r["checkpoint"]["reason"] for r in rows(path) if "checkpoint" in r]
    assert reasons == ["periodic", "periodic", "close"]
    assert verify(path).intact


def test_checkpoint_after_an_interval_without_more_events(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    path = tmp_path / f"{now.date().isoformat()}.jsonl"
    log = FileLog(tmp_path, fsync=False, signer=lambda: SIGNER, checkpoint_interval=0.05)
    try:
        log.write(make_event("exec", time=now, n=1))
        wait_until(lambda: '"checkpoint"' in path.read_text())
        assert [r.get("checkpoint", {}).get("reason") for r in rows(path)] == [
            None, "periodic"]
        assert writer_active(tmp_path)
        live = verify_files(tmp_path, KEYS)  # signed, but not closed: fine while live
        assert live[0].intact, live[0].problem
    finally:
        log.close()
    assert not writer_active(tmp_path)
    assert verify(path).intact


def test_a_late_events_file_is_sealed_at_the_next_tick(tmp_path: Path) -> None:
    path = tmp_path / NAME  # a past day: an agent's event forwarded late
    log = FileLog(tmp_path, fsync=False, signer=lambda: SIGNER, checkpoint_interval=0.05)
    try:
        log.write(make_event("exec", time=DAY, n=1))
        wait_until(lambda: '"checkpoint"' in path.read_text())
        assert rows(path)[-1]["checkpoint"]["reason"] == "rotate"
        assert verify(path).intact
    finally:
        log.close()
    assert rows(path)[-1]["checkpoint"]["reason"] == "rotate"


def test_a_new_day_seals_the_previous_file(tmp_path: Path) -> None:
    with FileLog(tmp_path, fsync=False, signer=lambda: SIGNER) as log:
        log.write(make_event("exec", time=DAY, n=1))
        log.write(make_event("exec", time=DAY + timedelta(days=1), n=2))
    first = rows(tmp_path / NAME)
    assert first[-1]["checkpoint"]["reason"] == "rotate"
    assert all(r.intact for r in verify_files(tmp_path, KEYS, live=False))


def test_the_chain_continues_across_restarts_and_writers(tmp_path: Path) -> None:
    write_log(tmp_path, count=2)
    logs = [FileLog(tmp_path, fsync=False, signer=lambda: SIGNER) for _ in range(3)]

    def writer(log: FileLog, tag: int) -> None:
        for n in range(100):
            log.write(make_event("exec", time=DAY, user=f"w{tag}", n=n, command="x" * 5000))

    threads = [threading.Thread(target=writer, args=(log, i)) for i, log in enumerate(logs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for log in logs:
        log.close()
    report = verify(tmp_path / NAME)
    assert report.intact, report.problem
    assert report.events == 302


def test_forwarded_events_cannot_carry_chain_members() -> None:
    event = make_event("exec", time=DAY)
    forged = {**event.to_dict(), "chain": {"seq": 1}, "checkpoint": {"reason": "close"}}
    assert "chain" not in AuditEvent.from_dict(forged).to_dict()
    assert "checkpoint" not in AuditEvent.from_dict(forged).to_dict()
    with pytest.raises(Exception, match="reserved"):
        make_event("exec", chain="x")


# -- tampering ------------------------------------------------------------------------------


def test_an_edited_user_name_is_found(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    lines = raw_lines(path)
    lines[2] = lines[2].replace(b'"user":"user2"', b'"user":"mallory"')
    rewrite(path, lines)
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("edited", 3)
    assert "line 3 was edited" in problem.message


def test_a_deleted_middle_line_is_found(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    lines = raw_lines(path)
    del lines[2]
    rewrite(path, lines)
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("missing", 3)
    assert "1 line(s) missing before line 3" in problem.message


def test_two_swapped_lines_are_found(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    lines = raw_lines(path)
    lines[1], lines[2] = lines[2], lines[1]
    rewrite(path, lines)
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("reordered", 2)
    assert "found at line 3" in problem.message


def test_an_inserted_unchained_line_is_found(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    lines = raw_lines(path)
    lines.insert(1, (make_event("user.login", time=DAY, user="ghost").to_json() + "\n").encode())
    rewrite(path, lines)
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("not-chained", 2)


def test_a_truncated_file_is_found(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    lines = raw_lines(path)
    rewrite(path, lines[:-2])  # the closing checkpoint and the last event removed
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("truncated", 1)
    assert "lines 1-4 follow the last signed checkpoint (line none)" in problem.message


def test_a_file_cut_after_a_periodic_checkpoint_is_found(tmp_path: Path) -> None:
    path = write_log(tmp_path, count=4, checkpoint_every=2)
    lines = raw_lines(path)
    assert b'"periodic"' in lines[5]
    rewrite(path, lines[:6])  # ends at a valid periodic checkpoint
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("truncated", 6)


def test_a_torn_last_line_is_reported_then_resumed_with_a_signed_marker(tmp_path: Path) -> None:
    path = write_log(tmp_path, count=3)
    fragment = make_event("exec", time=DAY, n=99).to_json()[:40]
    with open(path, "a") as handle:
        handle.write(fragment)  # a crash in the middle of a write
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("torn", 5)

    with FileLog(tmp_path, fsync=False, signer=lambda: SIGNER) as log:  # restart
        log.write(make_event("exec", time=DAY, n=4))
    text = path.read_text().splitlines()
    assert text[4] == fragment
    marker = json.loads(text[5])
    assert marker["checkpoint"]["reason"] == "torn"
    assert marker["kid"] == "auth-key"
    report = verify(path)
    assert report.intact, report.problem
    assert report.notes == ["line 5 is torn (unclean shutdown); the chain resumes at line 6"]
    assert scan(tmp_path).skipped == 1


def test_a_crash_without_a_torn_line_is_sealed_at_the_next_start(tmp_path: Path) -> None:
    path = write_log(tmp_path, count=3)
    rewrite(path, raw_lines(path)[:-1])  # as if the writer died before closing
    assert verify(path).problem is not None
    log = FileLog(tmp_path, fsync=False, signer=lambda: SIGNER)
    wait_until(lambda: b'"resume"' in path.read_bytes())
    log.close()
    report = verify(path)
    assert report.intact, report.problem


def test_a_file_cut_under_a_live_writer_is_recorded_and_found(tmp_path: Path) -> None:
    path = tmp_path / NAME
    with FileLog(tmp_path, fsync=False, signer=lambda: SIGNER) as log:
        for n in range(3):
            log.write(make_event("exec", time=DAY, n=n))
        rewrite(path, raw_lines(path)[:-1])  # the last event removed while auth runs
        log.write(make_event("exec", time=DAY, n=3))
    marker = rows(path)[2]
    assert marker["checkpoint"]["reason"] == "resume"
    assert marker["checkpoint"]["shrunk"]["to"] < marker["checkpoint"]["shrunk"]["from"]
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("truncated", 3)
    assert "cut from" in problem.message


def forge(path: Path, signer: KeySigner) -> None:
    """An attacker with write access: edit line 2, recompute every chain value after it and
    re-sign the checkpoints with a key of their own."""
    head, out = seed_for(path.name), []
    for seq, raw in enumerate(raw_lines(path), 1):
        line = ChainedLine.parse(raw.rstrip(b"\n"))
        assert line is not None
        doc = json.loads(line.body)
        if doc.get("user") == "user1":
            doc["user"] = "mallory"
        if "checkpoint" in doc:
            doc["checkpoint"].update(lines=seq - 1, head=head)
            body = checkpoint_body(doc["checkpoint"], signer)
        else:
            body = json.dumps(doc, separators=(",", ":")).encode()
        new, head = chain_line(body, head, seq)
        out.append(new + b"\n")
    rewrite(path, out)


def test_a_forged_checkpoint_signature_is_found(tmp_path: Path) -> None:
    path = write_log(tmp_path, count=4, checkpoint_every=2)
    forge(path, KeySigner(ec.generate_private_key(ec.SECP256R1()), "auth-key"))
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("bad-signature", 3)
    assert "no earlier valid checkpoint" in problem.message


def test_a_checkpoint_by_an_unknown_key_is_found(tmp_path: Path) -> None:
    path = write_log(tmp_path, count=2)
    forge(path, KeySigner(ed25519.Ed25519PrivateKey.generate(), "other"))
    problem = verify(path).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("unknown-key", 3)
    assert verify(path, {}).problem is not None


def test_a_file_renamed_to_another_day_is_found(tmp_path: Path) -> None:
    path = write_log(tmp_path)
    other = path.rename(tmp_path / "2026-11-25.jsonl")
    problem = verify(other).problem
    assert problem is not None
    assert (problem.kind, problem.line) == ("edited", 1)


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(), _JSON_VALUES, min_size=1, max_size=4), max_size=8),
       st.integers(min_value=0, max_value=10**12))
def test_lines_chained_in_one_go_verify_line_by_line(docs: list[dict[str, Any]],
                                                      seq: int) -> None:
    """What a writer appends for a batch (``chain_lines``) is, line by line, what the verifier
    checks: each body kept, each hash over its prev, seq and body, each prev the last hash."""
    bodies = [json.dumps(doc, separators=(",", ":")).encode() for doc in docs]
    prev = seed_for(NAME)
    data, head = chain_lines(bodies, prev, seq)
    lines = data.split(b"\n")
    assert lines.pop() == b""  # every line ends in a newline, and nothing follows
    assert len(lines) == len(bodies)
    for n, (raw, body) in enumerate(zip(lines, bodies, strict=True), seq + 1):
        line = ChainedLine.parse(raw)
        assert line is not None
        assert (line.body, line.seq, line.prev) == (body, n, prev)
        assert line.hash == link_hash(prev, n, body)
        assert line.intact
        assert json.loads(raw)["chain"]["hash"] == line.hash
        prev = line.hash
    assert head == prev
    if bodies:  # one line alone (a checkpoint) is chained the same way
        first = ChainedLine.parse(lines[0])
        assert first is not None
        assert chain_line(bodies[0], seed_for(NAME), seq + 1) == (lines[0], first.hash)


@pytest.mark.parametrize("body", [b"", b"{}", b"[1]", b'"x"', b'{"a":1'])
def test_a_body_that_is_no_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError, match="non-empty JSON object"):
        chain_lines([b'{"ok":1}', body], seed_for(NAME), 0)
