"""Kubernetes through Limen's proxy and kube agent, next to kubectl straight to the same API
server (not a test: run by hand, ``python bench/bench_kube.py``; see bench/README.md).

One cluster set up as tests/integration/kube_env.py does (``limen start --roles
auth,proxy,node,kube`` in front of the project's Kubernetes API emulator, which authenticates
the agent's service account and honours its impersonation; alice logged in with ``lmsh kube
login emu``), and two paths to the same emulator:

* ``direct``  the emulator's admin kubeconfig (a bearer token over TLS);
* ``limen``   alice's kubeconfig: the proxy's kube front (her kube certificate from the exec
              plugin), the reverse tunnel's data connection, the agent (RBAC per request, its
              own token and Impersonate-* headers, a ``kube.request`` audit event each).

Measured, the paths interleaved, ``--rounds`` times (the median round reported):

1. ``kubectl get configmaps -o name`` run ``--runs`` times in a row: runs per second (each
   run is a fresh kubectl process: discovery from its cache, then the list);
2. requests per second of ``GET /api/v1/namespaces/default/configmaps`` on one kept-alive
   HTTPS connection for ``--seconds`` (Python's http.client, the same client both ways);
3. ``kubectl exec <pod> -- head -c N /dev/zero`` of ``--exec-mb`` MB: MB/s (10^6 bytes).

Usage: ``python bench/bench_kube.py [--rounds 3] [--runs 20] [--seconds 5] [--exec-mb 100]``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _util  # noqa: F401  (the CLIs' warning filter, first)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from integration.kube_env import start_kube_env  # noqa: E402
from k8s_emulator.fixtures import TOKEN  # noqa: E402

PATH = "/api/v1/namespaces/default/configmaps"


def kubectl_runs(env: dict[str, str], runs: int, kubeconfig: str | None) -> float:
    args = ["kubectl", *(["--kubeconfig", kubeconfig] if kubeconfig else []),
            "get", "configmaps", "-o", "name"]
    start = time.perf_counter()
    for _ in range(runs):
        subprocess.run(args, env=env, check=True, capture_output=True)
    return runs / (time.perf_counter() - start)


def keepalive_rps(host: str, port: int, context: ssl.SSLContext, headers: dict[str, str],
                  seconds: float) -> float:
    conn = http.client.HTTPSConnection(host, port, context=context)
    count, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    try:
        while time.perf_counter() < deadline:
            conn.request("GET", PATH, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"GET {PATH}: {response.status}")
            count += 1
    finally:
        conn.close()
    return count / (time.perf_counter() - start)


def exec_mbps(env: dict[str, str], kubeconfig: str | None, size: int) -> float:
    args = ["kubectl", *(["--kubeconfig", kubeconfig] if kubeconfig else []),
            "exec", "bench", "--", "head", "-c", str(size), "/dev/zero"]
    start = time.perf_counter()
    out = subprocess.run(args, env=env, check=True, capture_output=True).stdout
    elapsed = time.perf_counter() - start
    if len(out) != size:
        raise SystemExit(f"exec returned {len(out)} bytes, not {size}")
    return size / elapsed / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--exec-mb", type=int, default=100)
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-kube-"))
    environment = start_kube_env(root)
    env = next(environment)
    try:
        alice = env.alice
        alice.lmsh("kube", "login", "emu")
        env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "bench", "namespace": "default"}})
        env.api.run_pod("bench")
        admin = str(env.api.kubeconfig_path)
        creds = json.loads(alice.lmsh("kube", "credentials", "--cluster", "emu").stdout)
        (root / "c.pem").write_text(creds["status"]["clientCertificateData"])
        (root / "k.pem").write_text(creds["status"]["clientKeyData"])
        config = json.loads(subprocess.run(
            ["kubectl", "config", "view", "--raw", "-o", "json"], env=alice.env,
            check=True, capture_output=True, text=True).stdout)
        ca = base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"])
        limen_ctx = ssl.create_default_context(cadata=ca.decode())
        limen_ctx.load_cert_chain(root / "c.pem", root / "k.pem")
        direct_ctx = ssl.create_default_context(cafile=str(env.api.ca_file))
        front = env.cluster.listeners["kube"].rsplit(":", 1)
        api_host, api_port = env.api.url.removeprefix("https://").rsplit(":", 1)
        rows: dict[str, list[tuple[float, float]]] = {"kubectl get runs/s": [],
                                                       "keep-alive GET/s": [],
                                                       "exec MB/s": []}
        size = options.exec_mb * 1_000_000
        for _ in range(options.rounds):
            rows["kubectl get runs/s"].append((
                kubectl_runs(alice.env, options.runs, admin),
                kubectl_runs(alice.env, options.runs, None)))
            rows["keep-alive GET/s"].append((
                keepalive_rps(api_host, int(api_port), direct_ctx,
                              {"Authorization": f"Bearer {TOKEN}"}, options.seconds),
                keepalive_rps(front[0], int(front[1]), limen_ctx, {}, options.seconds)))
            rows["exec MB/s"].append((exec_mbps(alice.env, admin, size),
                                      exec_mbps(alice.env, None, size)))
        print("\n| measure | direct | limen | limen / direct |\n|---|---:|---:|---:|")
        for name, values in rows.items():
            direct = statistics.median(v[0] for v in values)
            limen = statistics.median(v[1] for v in values)
            rounds = ", ".join(f"{d:.0f}/{lim:.0f}" for d, lim in values)
            print(f"| {name} | {direct:,.1f} | {limen:,.1f} | {limen / direct:.2f} | "
                  f"<!-- rounds direct/limen: {rounds} -->")
    finally:
        for _ in environment:
            pass
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
