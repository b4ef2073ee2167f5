"""Operator benchmark: reconcile throughput and apply-to-effective latency.

Run by hand (not by the test suite). The operator (``limen.operator.main.run``, kopf, in a
thread) runs against the Kubernetes API emulator of the tests (``tests/k8s_emulator``: HTTPS,
watch, status subresource) and pushes into a real ``limen start --random-ports`` subprocess:

a) **Throughput**: N Role custom resources are created at once (straight into the emulator's
   store, so creating them costs nothing measurable); the clock runs until every one of them
   reports ``Ready=True`` for its generation. Reported: objects/s, and the same N roles applied
   one by one through the auth API directly (``AuthClient.apply``, origin kubernetes: the
   floor the operator's one-apply-per-object design can reach) in the same run.
b) **Latency**: M Roles are created one after another; for each, the time from the create
   call until ``GET /v1/resources/roles/NAME`` on auth returns it (polled every 5 ms).
   Reported: p50, p90, max, next to one direct ``AuthClient.apply`` round trip.

    .venv/bin/python bench/bench_operator.py [--roles 500] [--latency 30] [--record]

``--record`` writes the figures, the machine and the command to ``bench/RESULTS.md`` under
"## Operator" (only that section is replaced).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _util

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from k8s_emulator.fixtures import KubeAPI  # noqa: E402
from limen.auth.client import AuthClient  # noqa: E402
from limen.ca.host_credentials import HostCredentials  # noqa: E402
from limen.operator.main import build_context, run  # noqa: E402
from limen.operator.settings import OperatorConfig  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
NAMESPACE = "bench"


class Operator:
    def __init__(self, data_dir: Path) -> None:
        self.config = OperatorConfig(data_dir=data_dir, resync_seconds=3600, retry_seconds=1,
                                     call_timeout_seconds=30)
        self.ctx = build_context(self.config)
        self.stop_flag, self.ready_flag = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(run(self.config, ctx=self.ctx, standalone=True,
                        stop_flag=self.stop_flag, ready_flag=self.ready_flag))  # type: ignore[arg-type]

    def __enter__(self) -> Operator:
        self.thread.start()
        if not self.ready_flag.wait(60):
            raise RuntimeError("the operator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join(60)


def role(name: str, logins: list[str]) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"allow": {"logins": logins, "node_labels": {"env": ["dev", "staging"]}},
                     "options": {"max_session_ttl": "8h"}}}


def count_ready(kube: KubeAPI) -> int:
    ready = 0
    for obj in kube.list("roles", NAMESPACE):
        status = obj.get("status") or {}
        if status.get("observedGeneration") == obj["metadata"]["generation"] and any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ()):
            ready += 1
    return ready


def throughput(kube: KubeAPI, count: int) -> tuple[float, float]:
    """(seconds until all ``count`` are Ready, objects/s)."""
    start = time.perf_counter()
    for i in range(count):
        kube.create(role(f"bulk-{i:04d}", [f"u{i}"]))
    while count_ready(kube) < count:
        time.sleep(0.25)
    seconds = time.perf_counter() - start
    return seconds, _util.per_second(count, seconds)


async def direct_throughput(client: AuthClient, count: int) -> tuple[float, float]:
    start = time.perf_counter()
    for i in range(count):
        doc = role(f"direct.{i:04d}", [f"u{i}"])
        doc["metadata"] = {"name": f"direct.{i:04d}"}
        await client.apply([doc], origin="kubernetes")
    seconds = time.perf_counter() - start
    return seconds, _util.per_second(count, seconds)


async def latency(kube: KubeAPI, client: AuthClient, count: int) -> list[float]:
    samples: list[float] = []
    for i in range(count):
        name = f"lat-{i:03d}"
        start = time.perf_counter()
        await asyncio.to_thread(kube.create, role(name, ["x"]))
        while True:
            try:
                await client.get("roles", f"{NAMESPACE}.{name}")
                break
            except Exception:  # NotFound until the operator has applied it
                await asyncio.sleep(0.005)
        samples.append(time.perf_counter() - start)
    return samples


async def direct_latency(client: AuthClient, count: int) -> list[float]:
    samples: list[float] = []
    for i in range(count):
        doc = role(f"directlat.{i:03d}", ["x"])
        doc["metadata"] = {"name": f"directlat.{i:03d}"}
        start = time.perf_counter()
        await client.apply([doc], origin="kubernetes")
        samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", type=int, default=500)
    parser.add_argument("--latency", type=int, default=30)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    _util.print_machine()
    load_before = os.getloadavg()[0]
    busy_before, own_before = _util.system_busy(), time.process_time()
    wall_before = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, _util.running_cluster() as cluster, \
            KubeAPI(Path(tmp) / "kube") as kube:
        os.environ["KUBECONFIG"] = str(kube.kubeconfig_path)
        kube.create_namespace(NAMESPACE)
        creds = HostCredentials.load(cluster.data_dir / "admin")

        async def direct() -> tuple[tuple[float, float], list[float]]:
            async with AuthClient(cluster.auth, creds) as client:
                return (await direct_throughput(client, args.roles),
                        await direct_latency(client, args.latency))

        (direct_s, direct_rate), direct_lat = asyncio.run(direct())
        with Operator(cluster.data_dir) as operator:
            op_s, op_rate = throughput(kube, args.roles)

            async def measure() -> list[float]:
                async with AuthClient(cluster.auth, creds) as client:
                    return await latency(kube, client, args.latency)

            op_lat = asyncio.run(measure())
            calls = operator.ctx.auth.calls if operator.ctx.auth else 0
    wall = time.monotonic() - wall_before
    busy = (_util.system_busy() - busy_before) / wall
    own = (time.process_time() - own_before) / wall
    rows = [
        ["reconcile throughput, operator", f"{op_rate:,.1f}",
         f"{args.roles} Roles created at once → all Ready ({op_s:.1f} s)"],
        ["apply throughput, auth API direct", f"{direct_rate:,.1f}",
         f"{args.roles} AuthClient.apply calls, one after another ({direct_s:.1f} s)"],
        ["ratio operator / direct", f"{op_rate / direct_rate:.2f}", ""],
    ]
    _util.print_table(["path", "objects/s", "conditions"], rows)
    lat_rows = [
        ["create → visible in Limen, operator", *(f"{_util.percentile(op_lat, p) * 1000:.0f}"
                                                   for p in (50, 90, 100))],
        ["AuthClient.apply round trip, direct", *(f"{_util.percentile(direct_lat, p) * 1000:.0f}"
                                                   for p in (50, 90, 100))],
    ]
    _util.print_table(["latency (ms)", "p50", "p90", "max"], lat_rows)
    load = (f"load average {load_before:.1f} at the start; {busy:.2f} CPUs busy during the "
            f"run, {own:.2f} of them this process (operator, emulator, clients)")
    print(f"auth calls by the operator: {calls}; {load}")
    if args.record:
        record(args, rows, lat_rows, load)


def record(args: argparse.Namespace, rows: list[list[str]], lat_rows: list[list[str]],
           load: str) -> None:
    facts = _util.machine_facts()
    command = shlex.join([".venv/bin/python", "bench/bench_operator.py", *sys.argv[1:]])
    lines = [
        "## Operator", "",
        f"`bench/bench_operator.py`, {time.strftime('%Y-%m-%d')}.", "",
        "- Machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()) + ".",
        f"- Command: `{command}` ({args.roles} Roles, {args.latency} latency samples).",
        f"- Load: {load}; the limen subprocess is the rest (a shared machine).",
        "- Setup: the operator (kopf, in a thread) against the tests' Kubernetes API emulator "
        "(HTTPS, watch) and a real `limen start --random-ports`; one auth apply per object.", "",
        "| path | objects/s | conditions |", "|---|---:|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows), "",
        "| latency (ms) | p50 | p90 | max |", "|---|---:|---:|---:|",
        *(f"| {' | '.join(r)} |" for r in lat_rows), "",
    ]
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    start = text.find("\n## Operator\n")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + text[end if end >= 0 else len(text):]
    RESULTS.write_text(text.rstrip("\n") + "\n\n" + "\n".join(lines), encoding="utf-8")
    print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    main()
