"""Attack: YAML documents built to exhaust memory.

* a 13 MiB flat document (one list of 7 million one-letter items): before the fix, auth's
  memory grew by 3.5 GB composing it before the size check rejected it; the composer must
  stop at the node limit while parsing;
* "billion laughs": nine levels of aliases, each repeating the one below ten times (10^9
  nodes when expanded), must be refused while composing too.

Each is sent the ways a document reaches Limen — ``lmctl apply -f DIR``, ``lmctl apply -f -``
and the GitOps sync inside ``limen start`` — and must be refused with the file's name, with
nothing applied, a bounded peak memory, a ``gitops.rejected`` audit event for the sync and no
traceback in the daemon's log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from integration.cluster import COMMAND_TIMEOUT, LimenCluster, command, describe, wait_for

from .attacks import assert_no_traceback, write

ROLE = ("apiVersion: limen.dev/v1alpha1\nkind: Role\nmetadata: {{name: {name}}}\n"
        "spec: {{allow: {{logins: [{name}]}}}}\n")
FLAT = ("apiVersion: limen.dev/v1alpha1\nkind: Role\nmetadata: {name: flat}\n"
        "spec:\n  allow:\n    logins: [" + ",".join(["a"] * 7_000_000) + "]\n")
LAUGHS = "\n".join(
    ["apiVersion: limen.dev/v1alpha1", "kind: Role", "metadata: {name: laughs}",
     "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    + ["spec: {allow: {logins: *a8}}"]) + "\n"
REFUSAL = "the document expands to more than 200000 YAML nodes"
MEMORY_LIMIT_MIB = 400
"""Peak resident memory allowed to a process refusing the flat document (unbounded: GBs)."""

_MEASURE = """
import resource, subprocess, sys
result = subprocess.run(sys.argv[1:], input=sys.stdin.read(), text=True, capture_output=True)
sys.stderr.write(result.stderr)
sys.stdout.write(result.stdout)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
sys.exit(result.returncode)
"""


def measured_lmctl(cluster: LimenCluster, *args: str | Path,
                   input: str = "") -> tuple[subprocess.CompletedProcess[str], int]:
    """``lmctl --data-dir D ARGS``, run by a fresh interpreter whose only child it is: the
    result and lmctl's peak resident memory in MiB (printed last by that interpreter)."""
    argv = [sys.executable, "-c", _MEASURE, command("lmctl"), "--data-dir",
            str(cluster.data_dir), *map(str, args)]
    result = subprocess.run(argv, env=cluster.env, input=input, capture_output=True,
                            text=True, timeout=COMMAND_TIMEOUT * 2, check=False)
    *lines, peak = result.stdout.splitlines()
    result.stdout = "\n".join(lines)
    return result, int(peak)


def roles(cluster: LimenCluster) -> set[str]:
    return {doc["metadata"]["name"] for doc in cluster.lmctl_json("get", "roles")["items"]}


def test_apply_of_a_13_mib_flat_document_is_refused_in_bounded_memory(
        cluster: LimenCluster, tmp_path: Path) -> None:
    directory = tmp_path / "change"
    write(directory, "a-good.yaml", ROLE.format(name="good"))
    assert len(write(directory, "flat.yaml", FLAT).read_bytes()) > 13 * 1024 * 1024
    result, peak = measured_lmctl(cluster, "apply", "-f", directory)
    assert result.returncode == 1, describe(result)
    assert f"flat.yaml[0]: {REFUSAL}" in result.stderr
    assert peak < MEMORY_LIMIT_MIB, f"lmctl peaked at {peak} MiB"
    assert not {"good", "flat"} & roles(cluster)  # all or nothing
    assert_no_traceback(cluster)


def test_billion_laughs_on_stdin_is_refused(cluster: LimenCluster) -> None:
    result, peak = measured_lmctl(cluster, "apply", "-f", "-", input=LAUGHS)
    assert result.returncode == 1, describe(result)
    assert f"<stdin>[0]: {REFUSAL}" in result.stderr
    assert peak < MEMORY_LIMIT_MIB
    assert "laughs" not in roles(cluster)
    assert_no_traceback(cluster)


def _peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_sync_of_bombs_is_rejected_and_audited_in_bounded_memory(tmp_path: Path) -> None:
    directory = tmp_path / "access"
    write(directory, "roles/good.yaml", ROLE.format(name="good"))
    write(directory, "roles/flat.yaml", FLAT)
    write(directory, "roles/laughs.yaml", LAUGHS)
    synced = LimenCluster(tmp_path / "synced", extra_args=["--gitops", str(directory)])
    try:
        synced.start()
        [event] = wait_for(lambda: synced.audit("gitops.rejected"), 60,
                           "the sync to reject the bombs")
        errors = "\n".join(event["errors"])
        assert f"roles/flat.yaml[0]: {REFUSAL}" in errors
        assert f"roles/laughs.yaml[0]: {REFUSAL}" in errors
        assert not {"good", "flat", "laughs"} & roles(synced)
        assert synced.process is not None
        peak = _peak_rss_mib(synced.process.pid)
        assert peak < MEMORY_LIMIT_MIB, f"limen start peaked at {peak} MiB"
        assert_no_traceback(synced)
        synced.stop()
    finally:
        synced.kill()
