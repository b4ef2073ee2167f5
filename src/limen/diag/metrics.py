"""``Metrics``: the Prometheus metrics of one Limen process, in a registry of its own.

Built once per process by its composition (``limen.cli.compose``, ``limen.cli.compose_remote``,
``limen operator``) and passed to what it instruments; never a module-level global, so two
components in one test process keep their numbers apart. Served by
:class:`~limen.diag.listener.DiagListener` at ``/metrics``.

Names are stable (dashboards and alerts use them): ``limen_`` prefix, counters end in
``_total``, durations are ``_seconds`` histograms, timestamps ``_timestamp_seconds``.
docs/observability.md lists every one with its labels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                    2.5, 5.0)
_SYNC_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _TunnelAgents(Collector):
    """``limen_tunnel_agents_connected{proxy}``: read from each proxy's registry at scrape
    time (a count kept elsewhere can never drift from the real one)."""

    def __init__(self) -> None:
        self._sources: dict[str, Callable[[], int]] = {}
        self._lock = threading.Lock()

    def add(self, proxy: str, count: Callable[[], int]) -> None:
        with self._lock:
            self._sources[proxy] = count

    def remove(self, proxy: str) -> None:
        with self._lock:
            self._sources.pop(proxy, None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("limen_tunnel_agents_connected",
                                   "Agents holding a reverse tunnel to this proxy",
                                   labels=["proxy"])
        with self._lock:
            sources = dict(self._sources)
        for proxy, count in sorted(sources.items()):
            family.add_metric([proxy], float(count()))
        yield family


class Metrics:
    """See the module doc. Attributes are the metric objects; the ``record_*`` helpers keep
    the label values of a family in one place."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}
        r = self.registry
        self.build_info = Gauge("limen_build_info", "The running Limen version (always 1)",
                                ["version"], registry=r)
        self.build_info.labels(_limen_version()).set(1)
        self.logins = Counter("limen_logins", "User logins by outcome (success, failure)",
                              ["outcome"], registry=r)
        self.certificates_issued = Counter(
            "limen_certificates_issued", "Certificates issued by type (user, host, db, ...)",
            ["type"], registry=r)
        self.sessions = Counter("limen_sessions", "Sessions started, by protocol",
                                ["protocol"], registry=r)
        self.sessions_active = Gauge("limen_sessions_active", "Sessions open now, by protocol",
                                     ["protocol"], registry=r)
        self.relayed_bytes = Counter(
            "limen_relayed_bytes", "Bytes relayed by ended sessions, by protocol and direction "
            "(in: client to server, out: server to client)", ["protocol", "direction"],
            registry=r)
        self.tunnel_agents = _TunnelAgents()
        r.register(self.tunnel_agents)
        self.tunnel_connections = Counter(
            "limen_tunnel_connections", "Agent tunnels registered by this proxy", ["proxy"],
            registry=r)
        self.tunnel_reconnects = Counter(
            "limen_tunnel_reconnects", "Agent tunnels registered again after the same agent's "
            "earlier tunnel to this proxy was lost", ["proxy"], registry=r)
        self.heartbeats = Counter("limen_heartbeats", "Agent heartbeats received, by role",
                                  ["role"], registry=r)
        self.audit_events = Counter(
            "limen_audit_events_written", "Audit events written, by type and outcome",
            ["event", "outcome"], registry=r)
        self.audit_failures = Counter("limen_audit_write_failures",
                                      "Audit events that could not be written", registry=r)
        self.backend_seconds = Histogram(
            "limen_backend_operation_seconds", "Backend operation latency, by operation",
            ["operation"], buckets=_LATENCY_BUCKETS, registry=r)
        self.backend_errors = Counter("limen_backend_operation_errors",
                                      "Backend operations that raised, by operation",
                                      ["operation"], registry=r)
        self.gitops_last_applied = Gauge(
            "limen_gitops_last_applied_commit_timestamp_seconds",
            "Commit time of the last Git commit the sync applied (UNIX seconds)", registry=r)
        self.gitops_last_attempt = Gauge(
            "limen_gitops_last_attempt_timestamp_seconds",
            "When the Git sync last tried (UNIX seconds)", registry=r)
        self.gitops_last_success = Gauge(
            "limen_gitops_last_attempt_success",
            "1 if the Git sync's last attempt applied or found nothing new, 0 if it failed",
            registry=r)
        self.gitops_seconds = Histogram("limen_gitops_sync_duration_seconds",
                                        "Duration of one Git sync attempt",
                                        buckets=_SYNC_BUCKETS, registry=r)
        self.gitops_syncs = Counter("limen_gitops_syncs",
                                    "Git sync attempts by result (applied, unchanged, failed)",
                                    ["result"], registry=r)
        self.rbac_decisions = Counter(
            "limen_rbac_decisions", "Access decisions by kind (ssh, db, kube, app, api) and "
            "decision (allowed, denied)", ["kind", "decision"], registry=r)
        self.trust_answers = Counter(
            "limen_trust_answers", "Auth trust answers a process apart from auth received, by "
            "source (poll: it asked auth; push: a proxy carried it signed) and outcome "
            "(poll: answered, failed; push: accepted, refused, ignored)",
            ["source", "outcome"], registry=r)
        self.operator_reconciles = Counter(
            "limen_operator_reconciles", "Operator reconciles by kind and outcome (ok, error)",
            ["kind", "outcome"], registry=r)

    def session_opened(self, protocol: str) -> None:
        self.sessions.labels(protocol).inc()
        with self._lock:
            self._active[protocol] = self._active.get(protocol, 0) + 1
            self.sessions_active.labels(protocol).set(self._active[protocol])

    def session_closed(self, protocol: str) -> None:
        """An end whose start this process did not see leaves the gauge at 0."""
        with self._lock:
            self._active[protocol] = max(0, self._active.get(protocol, 0) - 1)
            self.sessions_active.labels(protocol).set(self._active[protocol])

    def record_gitops_attempt(self, result: str, duration: float, when: float,
                              commit_time: float | None = None) -> None:
        """One Git sync attempt: ``result`` applied, unchanged or failed."""
        self.gitops_syncs.labels(result).inc()
        self.gitops_seconds.observe(duration)
        self.gitops_last_attempt.set(when)
        self.gitops_last_success.set(0 if result == "failed" else 1)
        if commit_time is not None:
            self.gitops_last_applied.set(commit_time)


def _limen_version() -> str:
    try:
        return version("limen")
    except PackageNotFoundError:
        return "unknown"
