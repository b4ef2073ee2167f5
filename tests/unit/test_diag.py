"""``limen.diag`` and what feeds it, in one process: the metrics registry (one per process,
apart from the global one), what written audit events count as (``audit_view``), the metered
audit log and backend (results and errors unchanged, protocols kept), the diagnostics
listener's ``/metrics`` (parsed with ``prometheus_client.parser``), ``/healthz`` and
``/readyz`` (503 naming the failed check, ``?exclude=``), and the JSON log format (one object
per line, a field named like a secret redacted)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from limen.backend.memory import MemoryBackend
from limen.backend.metered import MeteredBackend, unwrapped
from limen.cli.log_format import JSONFormatter
from limen.config import load_settings
from limen.diag import Check, DiagListener, Metrics, Readiness
from limen.diag.audit_view import observe_event
from limen.errors import BadParameter, NotFound
from limen.events.event import make_event
from limen.events.filelog import FileLog
from limen.events.metered import MeteredLog
from limen.events.search import SearchableLog


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_each_process_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()
    one.logins.labels("success").inc()
    assert sample(one, "limen_logins_total", outcome="success") == 1
    assert sample(two, "limen_logins_total", outcome="success") == 0
    assert REGISTRY.get_sample_value("limen_logins_total", {"outcome": "success"}) is None


async def test_written_audit_events_move_their_metrics(tmp_path: Path) -> None:
    metrics = Metrics()
    log = MeteredLog(FileLog(tmp_path / "events"), metrics)
    try:
        await log.emit(make_event("user.login", user="ana", login_method="password"))
        await log.emit(make_event("user.login", success=False, user="ana", reason="bad"))
        await log.emit(make_event("cert.create", user="ana", cert_type="user"))
        await log.emit(make_event("session.start", user="ana", session_id="s1"))
        await log.emit_many([
            make_event("db.session.start", user="ana", db_protocol="postgres"),
            make_event("db.session.end", user="ana", db_protocol="postgres",
                       bytes_to_db=10, bytes_from_db=20),
            make_event("access.denied", success=False, user="bo", action="db.login"),
        ])
        await log.emit(make_event("session.end", user="ana", bytes_in=5, bytes_out=7))
        await log.emit(make_event("session.end", user="ana", bytes_in=1, bytes_out=1))
    finally:
        await log.aclose()
    assert sample(metrics, "limen_logins_total", outcome="success") == 1
    assert sample(metrics, "limen_logins_total", outcome="failure") == 1
    assert sample(metrics, "limen_certificates_issued_total", type="user") == 1
    assert sample(metrics, "limen_sessions_total", protocol="ssh") == 1
    assert sample(metrics, "limen_sessions_total", protocol="postgres") == 1
    # an end whose start this process never saw leaves the gauge at 0, never below
    assert sample(metrics, "limen_sessions_active", protocol="ssh") == 0
    assert sample(metrics, "limen_sessions_active", protocol="postgres") == 0
    assert sample(metrics, "limen_relayed_bytes_total", protocol="ssh", direction="in") == 6
    assert sample(metrics, "limen_relayed_bytes_total", protocol="postgres",
                  direction="out") == 20
    assert sample(metrics, "limen_rbac_decisions_total", kind="db", decision="denied") == 1
    assert sample(metrics, "limen_rbac_decisions_total", kind="ssh", decision="allowed") == 1
    assert sample(metrics, "limen_audit_events_written_total", event="user.login",
                  outcome="failure") == 1


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry but the creation times."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in metrics.registry.collect() for s in family.samples
            if not s.name.endswith("_created")}


async def test_a_written_batch_counts_as_its_events_one_by_one(tmp_path: Path) -> None:
    events = [
        make_event("db.session.start", user="ana", db_protocol="postgres"),
        *(make_event("db.session.query", user="ana", query=f"select {n}") for n in range(300)),
        make_event("db.session.query", success=False, user="ana", query="use other"),
        make_event("access.denied", success=False, user="bo", action="db.login"),
        make_event("db.session.end", user="ana", db_protocol="postgres", bytes_to_db=10,
                   bytes_from_db=20),
    ]
    batched, one_by_one = Metrics(), Metrics()
    log = MeteredLog(FileLog(tmp_path / "events"), batched)
    try:
        await log.emit_many(events)
    finally:
        await log.aclose()
    for event in events:
        observe_event(one_by_one, event.type.value, event.success, event.fields)
    assert samples(batched) == samples(one_by_one)
    assert sample(batched, "limen_audit_events_written_total", event="db.session.query",
                  outcome="success") == 300
    assert sample(batched, "limen_audit_events_written_total", event="db.session.query",
                  outcome="failure") == 1
    assert sample(batched, "limen_relayed_bytes_total", protocol="postgres",
                  direction="out") == 20


async def test_kube_sessions_are_counted_with_their_bytes(tmp_path: Path) -> None:
    metrics = Metrics()
    log = MeteredLog(FileLog(tmp_path / "events"), metrics)
    try:
        await log.emit(make_event("kube.session.start", user="ana", verb="exec"))
        assert sample(metrics, "limen_sessions_active", protocol="kube") == 1
        await log.emit(make_event("kube.session.end", user="ana", verb="exec", bytes_in=3,
                                  bytes_out=300))
        await log.emit(make_event("kube.request", user="ana", verb="exec"))
    finally:
        await log.aclose()
    assert sample(metrics, "limen_sessions_total", protocol="kube") == 1
    assert sample(metrics, "limen_sessions_active", protocol="kube") == 0
    assert sample(metrics, "limen_relayed_bytes_total", protocol="kube", direction="out") == 300
    assert sample(metrics, "limen_rbac_decisions_total", kind="kube", decision="allowed") == 1


async def test_a_failed_audit_write_is_counted_and_raised(tmp_path: Path) -> None:
    metrics = Metrics()
    inner = FileLog(tmp_path / "events")
    log = MeteredLog(inner, metrics)
    assert not isinstance(log, SearchableLog)  # a FileLog is not: the wrapper says the same
    inner.close()
    with pytest.raises(RuntimeError):
        await log.emit(make_event("user.login", user="ana"))
    assert sample(metrics, "limen_audit_write_failures_total") == 1
    assert sample(metrics, "limen_logins_total", outcome="success") == 0


async def test_the_metered_backend_times_calls_and_passes_errors_on() -> None:
    metrics = Metrics()
    inner = MemoryBackend(sweep_interval=None)
    backend = MeteredBackend(inner, metrics)
    try:
        await backend.put("/a", b"1")
        item = await backend.get("/a")
        assert item is not None
        assert item.value == b"1"
        with pytest.raises(NotFound):
            await backend.delete("/missing")
        assert unwrapped(backend) is inner
    finally:
        await backend.close()
    assert sample(metrics, "limen_backend_operation_seconds_count", operation="put") == 1
    assert sample(metrics, "limen_backend_operation_seconds_count", operation="get") == 1
    assert sample(metrics, "limen_backend_operation_errors_total", operation="delete") == 1


async def test_the_listener_serves_metrics_health_and_readiness() -> None:
    metrics = Metrics()
    metrics.logins.labels("success").inc(3)
    state = {"reason": "backend: connection refused"}

    async def backend() -> str | None:
        return state["reason"] or None

    async def slow() -> str | None:
        await asyncio.sleep(10)
        return None

    listener = DiagListener("127.0.0.1:0", metrics, Readiness(
        [Check("auth-backend", backend), Check("gitops", slow)], timeout=0.2))
    address = (await listener.start())["diag"]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://{address}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            assert families["limen_logins"].samples[0].value == 3
            async with http.post(f"http://{address}/metrics", data=b"x") as resp:
                assert resp.status == 405  # GETs only
            async with http.get(f"http://{address}/admin") as resp:
                assert resp.status == 404
            async with http.get(f"http://{address}/healthz") as resp:
                assert (resp.status, await resp.text()) == (200, "ok\n")
            async with http.get(f"http://{address}/readyz") as resp:
                body = await resp.text()
                assert resp.status == 503
            assert "fail auth-backend: backend: connection refused" in body
            assert "fail gitops: no answer within 0.2s" in body
            state["reason"] = ""
            async with http.get(f"http://{address}/readyz?exclude=gitops") as resp:
                assert resp.status == 200
                assert await resp.text() == "ready\nok auth-backend\n"
    finally:
        await listener.stop()


def test_json_logs_are_one_object_per_line_and_redact_secret_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("limen.test_diag")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("login of %s refused", "ana",
                       extra={"user": "ana", "password": "hunter2-secret"})
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert "hunter2-secret" not in line
    record = json.loads(line)
    assert record["level"] == "warning"
    assert record["logger"] == "limen.test_diag"
    assert record["message"] == "login of ana refused"
    assert record["user"] == "ana"
    assert record["time"].endswith("Z")


def test_diag_addr_comes_from_yaml_env_or_flag_and_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "limen.yaml"
    config.write_text("diag_addr: 127.0.0.1:3000\n", encoding="utf-8")
    assert load_settings(config, env={}).diag_addr == "127.0.0.1:3000"
    assert load_settings(env={"LIMEN_DIAG_ADDR": "0.0.0.0:3001"}).diag_addr == "0.0.0.0:3001"
    assert load_settings(env={}).diag_addr == ""  # off by default
    with pytest.raises(BadParameter, match="config diag_addr"):
        load_settings(env={}, overrides={"diag_addr": "localhost"})
