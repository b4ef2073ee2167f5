"""The WebSocket channel protocol of ``exec`` and ``attach`` (``v5.channel.k8s.io`` and
``v4.channel.k8s.io``), as kube-apiserver serves it to kubectl 1.32.

Used by ``podexec.py``. Every binary message starts with its channel: 0 stdin (client to
server), 1 stdout, 2 stderr, 3 the final ``v1 Status`` as JSON, 4 terminal resizes
(``{"Width": 80, "Height": 24}``, client to server) and, in v5 only, 255 with one more byte
to close that stream (``[255, 0]``: no more stdin). Once the session is open the server sends
one empty message on the lowest output channel asked for (stdout, else stderr, else the
status channel), as kube-apiserver's stream translator does; at the end it sends the status
and closes the WebSocket normally.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import aiohttp.web

from .errors import ApiError

__all__ = [
    "CLOSE",
    "ERROR",
    "PROTOCOLS",
    "RESIZE",
    "STDERR",
    "STDIN",
    "STDOUT",
    "Channels",
    "exit_status",
    "failure_status",
    "resize",
    "upgrade_required",
]

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exit_status(code: int, command: Sequence[str] = ()) -> dict[str, Any]:
    """The status a finished process reports: Success, or NonZeroExitCode with the code."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing command "
            f"[{' '.join(command)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def failure_status(message: str) -> dict[str, Any]:
    """The status of a process that could not be started (kube-apiserver's InternalError)."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def upgrade_required() -> ApiError:
    return ApiError.bad_request("Upgrade request required")


class Channels:
    """One open channel-protocol WebSocket."""

    def __init__(self, ws: aiohttp.web.WebSocketResponse) -> None:
        self.ws = ws
        self.v5 = ws.ws_protocol == PROTOCOLS[0]

    @classmethod
    async def open(cls, request: aiohttp.web.BaseRequest, outputs: Sequence[int]) -> Channels:
        """Upgrade ``request`` (400 unless it is a WebSocket asking for v5 or v4) and send
        the first, empty message on the lowest of ``outputs``."""
        ws = aiohttp.web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        if not ws.can_prepare(request).ok:
            raise upgrade_required()
        await ws.prepare(request)
        channels = cls(ws)
        if ws.ws_protocol is None:
            await ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR, message=b"no subprotocol")
            return channels
        await channels.send(min((c for c in outputs if c in (STDOUT, STDERR)), default=ERROR), b"")
        return channels

    async def send(self, channel: int, data: bytes) -> bool:
        """False when the client is gone."""
        if self.ws.closed:
            return False
        try:
            await self.ws.send_bytes(bytes([channel]) + data)
        except (ConnectionResetError, RuntimeError):
            return False
        return True

    async def finish(self, status: dict[str, Any]) -> None:
        await self.send(ERROR, json.dumps(status).encode())
        await self.ws.close()

    async def messages(self) -> Any:
        """(channel, data) for each binary message until the client closes."""
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data:
                yield message.data[0], message.data[1:]


def resize(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a resize message, or None if it is not one."""
    try:
        size = json.loads(data)
        return int(size["Width"]), int(size["Height"])
    except (ValueError, KeyError, TypeError):
        return None
