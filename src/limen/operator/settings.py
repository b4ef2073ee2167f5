"""The operator's settings: its own (:class:`OperatorConfig`, from flags and ``LIMEN_OPERATOR_*``
environment variables) and the branded kopf settings it runs with (:func:`configure_kopf`).

Branding, so that a Limen-managed object says who manages it::

    metadata.finalizers:   limen.dev/finalizer
    metadata.annotations:  limen.dev/last-handled-configuration   kopf's diff base
                           limen.dev/<handler-id>                  kopf's retry progress
                           limen.dev/kopf-managed                  kopf's storage marker
    Events:                reportingComponent limen-operator (Warning for failures; kopf's
                           own log lines become Events from level WARNING up)

The diff base (what a change is measured against) is the spec, the labels and the one annotation
Limen interprets, ``limen.dev/adopt``: a change of ``status`` or of any other annotation (kopf's
own, Argo CD's, Flux's) never starts a reconcile.

Called by ``limen.operator.main`` (startup) and ``limen.cli.limen`` (``limen operator``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf

from limen.api.resources import ADOPT_ANNOTATION, API_GROUP
from limen.errors import BadParameter

__all__ = [
    "DEFAULT_IMAGE",
    "FINALIZER",
    "FORCE_DELETE_ANNOTATION",
    "OPERATOR_ID_LABEL",
    "REPORTING_COMPONENT",
    "STORAGE_PREFIX",
    "LimenDiffBaseStorage",
    "OperatorConfig",
    "configure_kopf",
]

STORAGE_PREFIX = API_GROUP
FINALIZER = f"{API_GROUP}/finalizer"
OPERATOR_ID_LABEL = f"{API_GROUP}/operator-id"
"""Label that assigns an object to one operator (the operator started with the same id);
objects without it belong to the operator started without an id."""
FORCE_DELETE_ANNOTATION = f"{API_GROUP}/force-delete"
"""Annotation that makes the finalizer let go at once, even when auth cannot be reached."""
REPORTING_COMPONENT = "limen-operator"
DEFAULT_IMAGE = "ghcr.io/limen-dev/limen:0.1.0"
"""Image of the pods a Cluster creates when its spec names none (the operator's own version)."""

@dataclass(frozen=True)
class OperatorConfig:
    """What ``limen operator`` needs besides kopf's own options."""

    operator_id: str = ""
    """Handle only the objects labelled ``limen.dev/operator-id: <id>`` (empty: the objects
    without that label). Several operators with different ids own disjoint sets."""
    auth_address: str = ""
    """``host:port`` of the auth API. Empty with ``data_dir``: read from its listeners.json."""
    identity_dir: Path | None = None
    """Identity directory (key.pem, tls.crt, cas.pem, meta.json) the operator calls auth with,
    usually mounted from a Secret (see docs/kubernetes.md). Default: ``data_dir/admin``."""
    data_dir: Path | None = None
    """Development: the data directory of a ``limen start`` on the same machine; its
    listeners.json and admin identity are re-read whenever auth cannot be reached (a restart
    with ``--random-ports`` moves the port)."""
    resync_seconds: float = 60.0
    """How often every object is compared with Limen and drift made there is corrected."""
    retry_seconds: float = 10.0
    """Delay before a failed reconcile (auth unreachable) is tried again."""
    call_timeout_seconds: float = 10.0
    """Deadline of one call to the auth API."""
    delete_deadline_seconds: float = 300.0
    """How long a finalizer waits for an unreachable auth before it lets the object go."""
    image: str = DEFAULT_IMAGE
    """Default image of the pods a Cluster creates."""

    def __post_init__(self) -> None:
        for name in ("resync_seconds", "retry_seconds", "call_timeout_seconds",
                     "delete_deadline_seconds"):
            if not getattr(self, name) > 0:
                raise BadParameter(f"operator setting {name} must be positive")
        if not self.auth_address and self.data_dir is None:
            return  # checked when the operator starts: handlers for Cluster need no auth
        if self.identity_dir is None and self.data_dir is None:
            raise BadParameter("the operator needs an identity directory (--identity) "
                               "to call the auth API")

    @property
    def identity_path(self) -> Path | None:
        if self.identity_dir is not None:
            return self.identity_dir
        return self.data_dir / "admin" if self.data_dir is not None else None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> OperatorConfig:
        """Settings from ``LIMEN_OPERATOR_*`` variables, then ``overrides`` (flags; ``None``
        values are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        text = {"LIMEN_OPERATOR_ID": "operator_id", "LIMEN_AUTH_ADDRESS": "auth_address",
                "LIMEN_OPERATOR_IMAGE": "image"}
        paths = {"LIMEN_OPERATOR_IDENTITY": "identity_dir", "LIMEN_OPERATOR_DATA_DIR": "data_dir"}
        numbers = {"LIMEN_OPERATOR_RESYNC": "resync_seconds",
                   "LIMEN_OPERATOR_RETRY": "retry_seconds",
                   "LIMEN_OPERATOR_CALL_TIMEOUT": "call_timeout_seconds",
                   "LIMEN_OPERATOR_DELETE_DEADLINE": "delete_deadline_seconds"}
        for var, field in text.items():
            if env.get(var):
                values[field] = env[var]
        for var, field in paths.items():
            if env.get(var):
                values[field] = Path(env[var])
        for var, field in numbers.items():
            if env.get(var):
                values[field] = _seconds(var, env[var])
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _seconds(name: str, text: str) -> float:
    from limen.api.validation import parse_duration

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text).total_seconds()
    except BadParameter:
        raise BadParameter(f"{name}={text!r}: use seconds or a duration such as 30s, 5m") \
            from None


class LimenDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base in ``limen.dev/last-handled-configuration``, keeping only what the
    operator pushes to Limen: spec, labels and the ``limen.dev/adopt`` annotation."""

    interpreted_annotations: tuple[str, ...] = (ADOPT_ANNOTATION,)

    def __init__(self) -> None:
        super().__init__(prefix=STORAGE_PREFIX, key="last-handled-configuration")

    def build(self, *, body: Any, extra_fields: Iterable[Any] | None = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        kept = {k: annotations[k] for k in self.interpreted_annotations if k in annotations}
        metadata = essence.setdefault("metadata", {})
        metadata.pop("annotations", None)
        if kept:
            metadata["annotations"] = kept
        if not metadata:
            essence.pop("metadata", None)
        return essence


def configure_kopf(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    """Brand kopf's persistence and events, and key peering to the operator id."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = LimenDiffBaseStorage()
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.level = logging.WARNING  # kopf's own log lines: failures only
    settings.peering.name = f"limen-{config.operator_id}" if config.operator_id else "limen"
    settings.peering.mandatory = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # A CR deleted while its resync timer runs keeps its finalizer until the timer ends. By
    # default kopf waits ten loop cycles for that, then looks again only a minute later; a
    # timer ending its reconcile and status patch takes a few milliseconds.
    settings.background.instant_exit_timeout = 0.5
    settings.background.cancellation_polling = 1.0
