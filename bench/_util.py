"""Small helpers shared by Limen's benchmarks (``bench/*.py``; not part of the product or tests).

* :func:`machine_facts` / :func:`print_machine` — what ``bench/RESULTS.md`` records per run;
* :func:`running_cluster` — a real ``limen start --random-ports`` subprocess in a temporary
  data directory, yielding its ``listeners.json``; SIGTERM and wait on exit;
* :func:`timed`, :func:`percentile`, :func:`per_second` — timing and statistics;
* :func:`print_table` — the side-by-side comparison table every benchmark prints.

Benchmarks import it as ``import _util`` (``python bench/x.py`` puts ``bench/`` on the path),
before anything that imports asyncssh: it installs the CLIs' one warning filter.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import limen.cli  # noqa: F401  (silences asyncssh's DSA deprecation warning, as the CLIs do)

__all__ = [
    "BIN",
    "Cluster",
    "Elapsed",
    "machine_facts",
    "per_second",
    "percentile",
    "print_machine",
    "print_table",
    "process_cpu",
    "running_cluster",
    "system_busy",
    "timed",
]

BIN = Path(sys.executable).parent
"""The virtualenv's bin directory: ``limen``, ``lmctl`` and ``lmsh`` live next to Python."""


# ---------------------------------------------------------------------- machine


def machine_facts() -> dict[str, str]:
    """nproc, CPU model, Python and library versions: the header of every recorded result."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    facts = {
        "nproc": str(os.cpu_count() or 0),
        "usable cpus": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "kernel": platform.release(),
        "loadavg": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "python": platform.python_version(),
    }
    for dist in ("cryptography", "aiohttp", "argon2-cffi"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            facts[dist] = metadata.version(dist)
    return facts


def print_machine(facts: dict[str, str] | None = None) -> None:
    facts = facts or machine_facts()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    print("command: " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(),
                                                           *sys.argv[1:]]))


# ---------------------------------------------------------------------- timing, statistics


@dataclass
class Elapsed:
    """Filled in when the ``with timed()`` block ends."""

    seconds: float = 0.0
    start: float = field(default_factory=time.perf_counter)


@contextlib.contextmanager
def timed() -> Iterator[Elapsed]:
    """``with timed() as t: ...`` then ``t.seconds`` (wall clock, ``perf_counter``)."""
    elapsed = Elapsed()
    try:
        yield elapsed
    finally:
        elapsed.seconds = time.perf_counter() - elapsed.start


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else math.inf


def percentile(values: Sequence[float], pct: float) -> float:
    """The ``pct``-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def process_cpu(pid: int, tid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by process ``pid``, or by its thread ``tid``."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy() -> float:
    """CPU seconds all CPUs have spent not idle since boot (``/proc/stat``): the difference
    over a run, minus the benchmark's own processes, is what other processes used."""
    values = [int(v) for v in Path("/proc/stat").read_text(encoding="utf-8").split("\n", 1)[0]
              .split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- output


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain-text table; floats get thousands separators, the first column is left-aligned."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True)))

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in text:
        print(line(row))


# ---------------------------------------------------------------------- a real cluster


@dataclass
class Cluster:
    """A running ``limen start`` subprocess."""

    data_dir: Path
    listeners: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def web(self) -> str:
        return self.listeners["web"]

    @property
    def auth(self) -> str:
        return self.listeners["auth"]


@contextlib.contextmanager
def running_cluster(*extra_args: str, timeout: float = 60.0,
                    keep: bool = False) -> Iterator[Cluster]:
    """Start ``limen start --random-ports --data-dir TMP EXTRA_ARGS`` and wait for its
    ``listeners.json``; on exit SIGTERM it, wait, and remove TMP (unless ``keep``).

    The daemon's output goes to ``TMP/../limen.log``, shown in the error if it fails to start.
    """
    base = Path(tempfile.mkdtemp(prefix="limen-bench-"))
    data_dir, log_path = base / "data", base / "limen.log"
    cmd = [str(BIN / "limen"), "start", "--data-dir", str(data_dir), "--random-ports",
           *extra_args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        listeners = _wait_for_listeners(data_dir / "listeners.json", process, log_path, timeout)
        yield Cluster(data_dir, listeners, process, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def _wait_for_listeners(path: Path, process: subprocess.Popen[bytes], log_path: Path,
                        timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"limen start exited with {process.returncode}:\n"
                               + log_path.read_text(encoding="utf-8", errors="replace"))
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data:
                return {str(k): str(v) for k, v in data.items()}
        time.sleep(0.05)  # polling a file another process writes; bounded by the deadline
    raise RuntimeError(f"limen start wrote no {path} within {timeout:.0f}s:\n"
                       + log_path.read_text(encoding="utf-8", errors="replace"))
