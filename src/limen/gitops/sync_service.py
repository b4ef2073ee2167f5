"""The Git sync as a ``limen start`` service: first sync before the daemon reports ready.

``start()`` returns only after the first sync attempt has finished (applied, rejected or
failed), so DATA_DIR/listeners.json — what scripts and tests wait for — appears once the
repository's state is in the store; then the sync keeps polling in the background. It opens
no listener. Built by ``limen.cli.compose.cluster_services`` when ``gitops.source`` is set,
after the auth service (whose ``AuthServer`` it applies through).
"""

from __future__ import annotations

from limen.auth.auth_service import AuthService
from limen.config import Settings
from limen.gitops.sync import GitOpsSync

__all__ = ["GitOpsService"]


class GitOpsService:
    name = "gitops"

    def __init__(self, settings: Settings, auth: AuthService) -> None:
        self.sync = GitOpsSync(settings, auth.server)

    async def start(self) -> dict[str, str]:
        await self.sync.start()
        return {}

    async def stop(self) -> None:
        await self.sync.stop()
