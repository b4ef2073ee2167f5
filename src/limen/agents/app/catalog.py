"""Which web applications an app agent serves: those in its own config (``app.apps``) and the
cluster's ``Resource`` objects of ``spec.kind: app`` that match one of its ``app.resources``
label selectors (:mod:`limen.agents.resource_catalog`). Called by
:mod:`limen.agents.app.app_service`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from limen.agents.resource_catalog import ResourceCatalog, ResourceLister, config_resources
from limen.api.resources import Resource

__all__ = ["AppCatalog", "ResourceLister", "static_apps"]


def static_apps(entries: Sequence[Mapping[str, Any]]) -> list[Resource]:
    """``app.apps`` entries as validated Resources (BadParameter/ValidationFailed naming the
    entry otherwise)."""
    return config_resources(entries, "app", "app.apps")


class AppCatalog(ResourceCatalog):
    """The served apps, refreshed at most every ``max_age`` seconds."""

    def __init__(self, static: Sequence[Resource], selectors: Sequence[Mapping[str, Any]],
                 lister: ResourceLister | None, *, max_age: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("app", static, selectors, lister, setting="app.resources",
                         agent="app agent", noun="an app", max_age=max_age, clock=clock)
