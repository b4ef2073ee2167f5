"""Fixtures shared by the unit tests.

- ``auth``: an in-memory ``AuthServer`` (cluster ``unit``, a ``MemoryEmitter``) with the demo
  access repository ``examples/gitops`` applied as Git would; a module may override it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from limen.api.loader import load_path
from limen.api.resources import Origin
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings
from limen.events.emitter import MemoryEmitter

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"


@pytest.fixture
async def auth() -> AuthServer:
    server = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter())
    await server.start()
    await server.apply(validate(load_path(EXAMPLES)), Origin.GIT, actor="test")
    return server
