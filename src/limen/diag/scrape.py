"""Reading a Limen process's ``/metrics`` back: fetch, parse (``prometheus_client.parser``)
and summarise in the few numbers an operator watches (:class:`Snapshot`).

Called by ``lmctl top`` (``limen.cli.lmctl_top``), which renders a snapshot every refresh and
derives rates (logins per second) from two of them.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from limen.errors import ConnectionProblem

__all__ = ["Samples", "Snapshot", "fetch_samples", "snapshot"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""(sample name, its labels) -> value."""


def fetch_samples(address: str, timeout: float = 5.0) -> Samples:
    """``GET http://ADDRESS/metrics``, parsed; ``ConnectionProblem`` when it cannot be read."""
    url = f"http://{address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            text = answer.read().decode()
    except (OSError, urllib.error.URLError) as err:
        reason = getattr(err, "reason", None) or err
        raise ConnectionProblem(f"cannot read the metrics at {url}: {reason} (is the process "
                                f"started with --diag-addr {address}?)") from None
    try:
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}
    except ValueError as err:
        raise ConnectionProblem(f"{url} did not answer Prometheus text: {err}") from None


@dataclass(frozen=True)
class Snapshot:
    """What ``lmctl top`` shows of one scrape."""

    version: str = ""
    sessions_active: dict[str, float] = field(default_factory=dict)
    sessions_total: dict[str, float] = field(default_factory=dict)
    tunnel_agents: float = 0
    tunnel_reconnects: float = 0
    heartbeats: float = 0
    logins: dict[str, float] = field(default_factory=dict)
    certificates: dict[str, float] = field(default_factory=dict)
    decisions: dict[str, float] = field(default_factory=dict)
    audit_written: float = 0
    audit_failures: float = 0
    backend_ops: float = 0
    backend_seconds: float = 0
    git_sync: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version, "sessions_active": self.sessions_active,
            "sessions_total": self.sessions_total, "tunnel_agents": self.tunnel_agents,
            "tunnel_reconnects": self.tunnel_reconnects, "heartbeats": self.heartbeats,
            "logins": self.logins, "certificates": self.certificates,
            "decisions": self.decisions, "audit_written": self.audit_written,
            "audit_failures": self.audit_failures, "backend_ops": self.backend_ops,
            "backend_mean_seconds": self.backend_seconds / self.backend_ops
            if self.backend_ops else 0.0,
            "git_sync": self.git_sync,
        }


def snapshot(samples: Samples) -> Snapshot:
    by: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    sums: dict[str, float] = defaultdict(float)
    version = ""
    for (name, labels), value in samples.items():
        sums[name] += value
        label = dict(labels)
        if name == "limen_build_info":
            version = label.get("version", "")
        key = {"limen_sessions_active": "protocol", "limen_sessions_total": "protocol",
               "limen_logins_total": "outcome", "limen_certificates_issued_total": "type",
               "limen_rbac_decisions_total": "decision"}.get(name)
        if key is not None:
            by[name][label.get(key, "")] += value
    has_sync = any(n.startswith("limen_gitops_") for n, _ in samples)
    git_sync: dict[str, Any] = {}
    if has_sync:
        git_sync = {
            "last_applied_commit_time": sums["limen_gitops_last_applied_commit_timestamp_seconds"],
            "last_attempt_time": sums["limen_gitops_last_attempt_timestamp_seconds"],
            "last_attempt_ok": sums["limen_gitops_last_attempt_success"] == 1,
            "attempts": sums["limen_gitops_syncs_total"],
        }
    return Snapshot(
        version=version,
        sessions_active=dict(by["limen_sessions_active"]),
        sessions_total=dict(by["limen_sessions_total"]),
        tunnel_agents=sums["limen_tunnel_agents_connected"],
        tunnel_reconnects=sums["limen_tunnel_reconnects_total"],
        heartbeats=sums["limen_heartbeats_total"],
        logins=dict(by["limen_logins_total"]),
        certificates=dict(by["limen_certificates_issued_total"]),
        decisions=dict(by["limen_rbac_decisions_total"]),
        audit_written=sums["limen_audit_events_written_total"],
        audit_failures=sums["limen_audit_write_failures_total"],
        backend_ops=sums["limen_backend_operation_seconds_count"],
        backend_seconds=sums["limen_backend_operation_seconds_sum"],
        git_sync=git_sync,
    )
