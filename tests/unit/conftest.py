"""Fixtures shared by the unit tests.

- ``auth``: an in-memory ``AuthServer`` (cluster ``unit``, a ``MemoryEmitter``) with the demo
  access repository ``examples/gitops`` applied as Git would; a module may override it.
- ``operator_kube``: the Cluster reconciler on the Kubernetes API emulator
  (``operator_reconciling.Reconciling``, namespace ``limen`` created).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from operator_reconciling import NS, Reconciling

from k8s_emulator.fixtures import KubeAPI
from limen.api.loader import load_path
from limen.api.resources import Origin
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings
from limen.events.emitter import MemoryEmitter
from limen.operator.kube import KubeApi

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"


@pytest.fixture
async def auth() -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter())
    await server.start()
    await server.apply(validate(load_path(EXAMPLES)), Origin.GIT, actor="test")
    return server


@pytest.fixture
async def operator_kube(kube_api: KubeAPI) -> AsyncIterator[Reconciling]:
    kube_api.create_namespace(NS)
    kube = KubeApi(kube_api.api_client())
    try:
        yield Reconciling(kube)
    finally:
        await kube.close()
