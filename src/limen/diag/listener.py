"""``DiagListener``: the plain-HTTP diagnostics listener (``--diag-addr``, off by default).

::

    GET /metrics  ─▶ the process's Metrics registry, Prometheus text format
    GET /healthz  ─▶ 200 "ok": the process and its event loop answer
    GET /readyz   ─▶ 200 / 503, one line per check: "ok NAME" or "fail NAME: reason"
                     ?exclude=NAME (repeatable) leaves checks out, as kube-apiserver's does:
                     the operator's probes leave out ``gitops`` (a broken Git remote must
                     not take every auth replica out of its Service)

It serves no secret and accepts nothing but GETs, so plain HTTP on loopback is the default;
bind it wider (the operator's pods: 0.0.0.0:3000) only where the network is trusted. A
``limen.aio.Service``: ``limen start`` (``limen.cli.compose``) and ``limen operator`` start it
first so probes answer while the rest starts (``/readyz`` says what is not up yet).
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from limen.diag.health import Readiness
from limen.diag.metrics import Metrics

__all__ = ["DiagListener"]


class DiagListener:
    name = "diag"

    def __init__(self, address: str, metrics: Metrics, readiness: Readiness) -> None:
        self.bind = address
        self.metrics = metrics
        self.readiness = readiness
        self.address = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> dict[str, str]:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        host, _, port = self.bind.rpartition(":")
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port))
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0]
        self.address = f"{host or '127.0.0.1'}:{bound[1]}"
        return {"diag": self.address}

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        results = await self.readiness.run(exclude=set(request.query.getall("exclude", ())))
        ready = all(r.ok for r in results)
        lines = ["ready" if ready else "not ready"]
        lines += [f"ok {r.name}" if r.ok else f"fail {r.name}: {r.reason}" for r in results]
        return web.Response(text="\n".join(lines) + "\n", status=200 if ready else 503)
