"""Recordings of an agent started apart from auth: uploaded to auth when a session ends.

:class:`AuthRecordingSink` is the node agent's ``RecordingSink`` there: it streams the
finished ``<id>.cast`` to auth (``POST /v1/recordings/<id>``, metadata in a header) and deletes
it once auth has stored it. When auth cannot be reached (or the tunnel is not up yet, as when
the agent starts and recovers what a crash left) the file stays in the agent's sessions
directory and :meth:`retry_forever` hands it over as soon as the link is up, then
periodically (the same path that completes the recordings a crashed agent left behind,
``limen.recording.recovery``). Called by ``limen.cli.compose``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from limen.agents.auth_link import AuthLink
from limen.auth.http.agents import RECORDING_META_HEADER
from limen.errors import ConnectionProblem, LimenError
from limen.recording.recovery import recover_recordings
from limen.recording.writer import check_session_id

__all__ = ["AuthRecordingSink"]

log = logging.getLogger(__name__)


class AuthRecordingSink:
    def __init__(self, link: AuthLink) -> None:
        self.link = link

    async def upload(self, session_id: str, path: Path, meta: Mapping[str, Any]) -> None:
        """Raises ``LimenError``/``OSError`` when auth did not store it (the file stays)."""
        check_session_id(session_id)
        if not self.link.ready:
            raise ConnectionProblem("no route to auth yet; the recording is kept for later")
        header = base64.b64encode(json.dumps(dict(meta), default=str).encode()).decode()
        client = await self.link.client()
        handle = await asyncio.to_thread(open, path, "rb")
        try:
            await client.http.call("POST", f"/v1/recordings/{session_id}", data=handle,
                                   headers={RECORDING_META_HEADER: header,
                                            "Content-Type": "application/octet-stream"})
        finally:
            handle.close()
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def retry_forever(self, sessions: Path, interval: float = 30.0) -> None:
        """Hand over what earlier uploads left in ``sessions``: once the link is up, then
        every ``interval``."""
        await self.link.wait_ready()
        while True:
            try:
                await recover_recordings(sessions, self)
            except (LimenError, OSError) as err:
                log.warning("recording upload retry failed: %s", err)
            await asyncio.sleep(interval)  # a retry period, not synchronisation
