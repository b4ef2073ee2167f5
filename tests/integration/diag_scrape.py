"""Reading a running Limen process's diagnostics listener the way Prometheus and a kubelet do:
``/metrics`` parsed with ``prometheus_client.parser`` (so a test fails on text Prometheus could
not read), ``/readyz`` as status and body. Used by the observability integration tests."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Samples", "readyz", "scrape", "total", "value"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""(sample name, labels) -> value."""


def scrape(address: str) -> Samples:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the process has not reported it (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """The sum over every label set of ``name``."""
    return sum(v for (n, _), v in samples.items() if n == name)


def readyz(address: str, query: str = "") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}/readyz{query}",
                                    timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()
