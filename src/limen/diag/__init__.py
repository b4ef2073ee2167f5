"""Diagnostics: a process's Prometheus metrics, its health and readiness checks, and the
HTTP listener that serves them (``--diag-addr``: ``/metrics``, ``/healthz``, ``/readyz``).

One :class:`~limen.diag.metrics.Metrics` per process (its own registry, never the
``prometheus_client`` global one, so several components in one test process stay apart),
built by ``limen start`` (``limen.cli.compose``) or ``limen operator`` and passed to what it
instruments. The listener (:mod:`limen.diag.listener`) and the readiness checks
(:mod:`limen.diag.health`) know nothing of the components: the composition hands them
callables. ``lmctl top`` reads ``/metrics`` back through :mod:`limen.diag.scrape`.
"""

from limen.diag.health import Check, CheckResult, Readiness
from limen.diag.listener import DiagListener
from limen.diag.metrics import Metrics

__all__ = ["Check", "CheckResult", "DiagListener", "Metrics", "Readiness"]
