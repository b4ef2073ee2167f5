"""Tampering with the audit log of a real cluster is found by ``lmctl audit verify``.

A ``limen start --random-ports`` cluster writes events (users added, credentials issued), is
verified while it runs and after it stops; then each attack is made on a copy of its log —
an edited user name, a deleted middle line, two swapped lines, a truncated end, checkpoints
re-signed by a forged key, a torn last line — and ``lmctl audit verify --dir COPY`` must exit 1
naming the first broken line. The untouched log verifies (exit 0), and a torn line left in the
real log is resumed after at the next start with a signed marker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from integration.cluster import LimenCluster
from limen.events.chain import ChainedLine, KeySigner, chain_line, checkpoint_body

Tamper = Callable[[list[bytes]], list[bytes]]


def day_file(cluster: LimenCluster) -> Path:
    [path] = sorted((cluster.data_dir / "log" / "events").glob("*.jsonl"))
    return path


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def user_line(lines: list[bytes], name: str) -> int:
    """Index of the ``user.create`` event of ``name``."""
    return next(i for i, raw in enumerate(lines)
                if b'"event":"user.create"' in raw and f'"name":"{name}"'.encode() in raw)


def edit_user_name(lines: list[bytes]) -> list[bytes]:
    index = user_line(lines, "alice")
    lines[index] = lines[index].replace(b'"name":"alice"', b'"name":"mallory"')
    return lines


def delete_middle_line(lines: list[bytes]) -> list[bytes]:
    del lines[user_line(lines, "alice")]
    return lines


def swap_two_lines(lines: list[bytes]) -> list[bytes]:
    index = user_line(lines, "alice")
    lines[index], lines[index + 1] = lines[index + 1], lines[index]
    return lines


def truncate_end(lines: list[bytes]) -> list[bytes]:
    return lines[:-2]  # the closing checkpoint and the event before it


def torn_last_line(lines: list[bytes]) -> list[bytes]:
    return [*lines, b'{"event":"user.login","code":"L1000I","time":"20']


def forge_checkpoints(lines: list[bytes]) -> list[bytes]:
    """An attacker with write access and without auth's key: edit alice's event, recompute the
    whole chain, re-sign every checkpoint with their own key under auth's key id."""
    parsed = [ChainedLine.parse(raw.rstrip(b"\n")) for raw in lines]
    assert all(parsed)
    closing = json.loads(parsed[-1].body)  # type: ignore[union-attr]
    forger = KeySigner(ec.generate_private_key(ec.SECP256R1()), closing["kid"])
    head, out = parsed[0].prev, []  # type: ignore[union-attr]  (the seed, read from the file)
    for seq, raw in enumerate(lines, 1):
        line = ChainedLine.parse(raw.rstrip(b"\n"))
        assert line is not None
        doc = json.loads(line.body)
        if doc.get("name") == "alice":
            doc["name"] = "mallory"
        if "checkpoint" in doc:
            doc["checkpoint"].update(lines=seq - 1, head=head)
            body = checkpoint_body(doc["checkpoint"], forger)
        else:
            body = json.dumps(doc, separators=(",", ":")).encode()
        new, head = chain_line(body, head, seq)
        out.append(new + b"\n")
    return out


@pytest.fixture(scope="module")
def stopped(module_clusters: Callable[..., LimenCluster]) -> LimenCluster:
    cluster = module_clusters("audit")
    cluster.add_user("alice", roles=["access"])
    cluster.add_user("bob", roles=["access"])
    running = cluster.lmctl("audit", "verify", check=False)
    assert running.returncode == 0, running.stdout + running.stderr  # live: tail not signed yet
    search = cluster.audit("user.create")
    assert [e["name"] for e in search] == ["alice", "bob"]
    assert all("chain" not in e for e in search)
    cluster.stop()
    return cluster


def test_the_untouched_log_verifies(stopped: LimenCluster) -> None:
    result = stopped.lmctl("audit", "verify")
    name = day_file(stopped).name
    assert result.stdout.splitlines()[-1].startswith("audit log intact: 1 file(s)")
    assert f"ok      {name}:" in result.stdout
    assert json.loads(stopped.lmctl("audit", "verify", "-o", "json").stdout)["items"][0][
        "intact"] is True


@pytest.mark.parametrize(("tamper", "kind", "where"), [
    (edit_user_name, "edited", lambda lines: user_line(lines, "alice") + 1),
    (delete_middle_line, "missing", lambda lines: user_line(lines, "alice") + 1),
    (swap_two_lines, "reordered", lambda lines: user_line(lines, "alice") + 1),
    (truncate_end, "truncated", None),
    (forge_checkpoints, "bad-signature", None),
    (torn_last_line, "torn", lambda lines: len(lines) + 1),
])
def test_tampering_is_found(stopped: LimenCluster, tmp_path: Path, tamper: Tamper, kind: str,
                            where: Callable[[list[bytes]], int] | None) -> None:
    name = day_file(stopped).name
    original = lines_of(day_file(stopped))
    copy = tmp_path / "events"
    copy.mkdir()
    (copy / name).write_bytes(b"".join(tamper(list(original))))
    result = stopped.lmctl("audit", "verify", "--dir", copy, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    [broken] = [line for line in result.stdout.splitlines() if line.startswith("BROKEN")]
    assert f"({kind})" in broken
    if where is not None:
        assert f"{name} line {where(original)} ({kind})" in broken
    assert "audit log BROKEN: 1 of 1 file(s)" in result.stderr
    # the day can be named too, and the real log is still intact
    assert stopped.lmctl("audit", "verify", name.removesuffix(".jsonl")).returncode == 0


def test_a_torn_line_is_resumed_after_at_the_next_start(stopped: LimenCluster,
                                                        tmp_path: Path) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text(stopped.lmctl("audit", "verify", "--export-key").stdout)
    path = day_file(stopped)
    with path.open("ab") as handle:
        handle.write(b'{"event":"user.create","code":"L1001I","ti')  # a crash mid-write
    torn = len(lines_of(path))
    assert stopped.lmctl("audit", "verify", check=False).returncode == 1
    stopped.start()
    stopped.add_user("carol", roles=["access"])
    stopped.stop()
    result = stopped.lmctl("audit", "verify", "--key", keys)
    assert f"note: line {torn} is torn (unclean shutdown); the chain resumes at line " \
        f"{torn + 1}" in result.stdout
    marker = json.loads(lines_of(path)[torn])
    assert marker["checkpoint"]["reason"] == "torn"
    assert "sig" in marker
    assert [e["name"] for e in stopped.audit("user.create")] == ["alice", "bob", "carol"]
