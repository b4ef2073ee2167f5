"""``kubectl port-forward``: the ``pods/portforward`` subresource, as kubectl 1.32 uses it:
SPDY/3.1 tunnelled through a WebSocket (subprotocol ``SPDY/3.1+portforward.k8s.io``).

Used by ``apiserver.py`` for pods that run (``pods.py``). Each forwarded connection is a
pair of SPDY streams the client opens with the headers ``streamType`` (``error`` or
``data``), ``port`` and ``requestID``; the server replies to each, then connects to the
pod's port (127.0.0.1, or the local port the pod maps it to) and relays bytes on the data
stream, half-closing each way as the other side does. When the connection ends both streams
are closed; a failure to connect is reported on the error stream, as the kubelet does.
Messages of the WebSocket carry the SPDY byte stream without regard to frame boundaries.
A client asking for ``v4.channel.k8s.io`` (or no subprotocol) gets the channel protocol of
``portforward_channels.py`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp
import aiohttp.web
from multidict import MultiMapping

from .errors import ApiError
from .pods import Pod, PodRuntime
from .portforward_channels import CHANNEL_PROTOCOLS, forwarded_ports, serve_channels
from .spdy import DataFrame, GoAway, Ping, RstStream, SpdyError, SpdyFramer, SynStream

__all__ = ["PROTOCOL", "serve_portforward"]

PROTOCOL = "SPDY/3.1+portforward.k8s.io"


@dataclass
class _Forward:
    """One forwarded connection: its two streams and the TCP connection to the pod."""

    port: int
    error_stream: int = 0
    data_stream: int = 0
    writer: asyncio.StreamWriter | None = None
    pending: list[bytes] = field(default_factory=list)  # client data before the connect
    client_done: bool = False
    task: asyncio.Task[None] | None = None


class _Session:
    def __init__(self, ws: aiohttp.web.WebSocketResponse, pod: Pod) -> None:
        self.ws = ws
        self.pod = pod
        self.framer = SpdyFramer()
        self.forwards: dict[str, _Forward] = {}
        self.by_stream: dict[int, _Forward] = {}
        self._send_lock = asyncio.Lock()

    async def send(self, data: bytes) -> None:
        if self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await self.ws.send_bytes(data)

    async def run(self) -> None:
        try:
            async for message in self.ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                for frame in self.framer.feed(message.data):
                    await self.handle(frame)
        except SpdyError:
            await self.ws.close(code=aiohttp.WSCloseCode.PROTOCOL_ERROR)
        finally:
            tasks = [f.task for f in self.by_stream.values() if f.task is not None]
            for f in self.by_stream.values():
                if f.writer is not None:
                    f.writer.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def handle(self, frame: SynStream | DataFrame | RstStream | Ping | GoAway) -> None:
        if isinstance(frame, Ping):
            await self.send(self.framer.ping(frame.ping_id))
        elif isinstance(frame, SynStream):
            await self.open_stream(frame)
        elif isinstance(frame, DataFrame):
            forward = self.by_stream.get(frame.stream_id)
            if forward is None or frame.stream_id != forward.data_stream:
                return  # the error stream carries nothing from the client
            if forward.writer is None:
                forward.pending.append(frame.data)
            elif frame.data:
                forward.writer.write(frame.data)
                await forward.writer.drain()
            if frame.fin:
                forward.client_done = True
                if forward.writer is not None and forward.writer.can_write_eof():
                    forward.writer.write_eof()
        elif isinstance(frame, RstStream):
            forward = self.by_stream.get(frame.stream_id)
            if forward is not None and forward.writer is not None:
                forward.writer.close()

    async def open_stream(self, frame: SynStream) -> None:
        def header(name: str) -> str:
            return (frame.headers.get(name.lower()) or [""])[0]

        kind, port, request_id = header("streamType"), header("port"), header("requestID")
        await self.send(self.framer.syn_reply(frame.stream_id))
        if kind not in ("error", "data") or not port.isdigit():
            await self.send(self.framer.rst_stream(frame.stream_id, 1))  # PROTOCOL_ERROR
            return
        forward = self.forwards.setdefault(request_id, _Forward(int(port)))
        if kind == "error":
            forward.error_stream = frame.stream_id
        else:
            forward.data_stream = frame.stream_id
        self.by_stream[frame.stream_id] = forward
        if forward.error_stream and forward.data_stream and forward.task is None:
            forward.task = asyncio.create_task(self.forward(forward))

    async def forward(self, forward: _Forward) -> None:
        local = self.pod.local_port(forward.port)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
        except OSError as e:
            message = (
                f"error forwarding port {forward.port} to pod {self.pod.name}, uid "
                f"{self.pod.uid}: dial tcp 127.0.0.1:{local}: connect: {e.strerror or e}"
            )
            await self.send(self.framer.data(forward.error_stream, message.encode()))
            await self.close_streams(forward)
            return
        forward.writer = writer
        try:
            for data in forward.pending:
                writer.write(data)
            forward.pending.clear()
            if forward.client_done and writer.can_write_eof():
                writer.write_eof()
            while data := await reader.read(65536):
                await self.send(self.framer.data(forward.data_stream, data))
        except OSError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        await self.close_streams(forward)

    async def close_streams(self, forward: _Forward) -> None:
        await self.send(self.framer.data(forward.data_stream, b"", fin=True))
        await self.send(self.framer.data(forward.error_stream, b"", fin=True))


async def serve_portforward(
    request: aiohttp.web.BaseRequest,
    runtime: PodRuntime,
    namespace: str,
    name: str,
    params: MultiMapping[str],
) -> aiohttp.web.StreamResponse:
    pod = runtime.pod(namespace, name)
    ws = aiohttp.web.WebSocketResponse(protocols=(PROTOCOL, *CHANNEL_PROTOCOLS), max_msg_size=0)
    ready = ws.can_prepare(request)
    if not ready.ok:
        raise ApiError.bad_request("Upgrade request required")
    ports = forwarded_ports(params) if ready.protocol != PROTOCOL else []
    await ws.prepare(request)
    with runtime.stream():
        if ws.ws_protocol == PROTOCOL:
            await _Session(ws, pod).run()
        else:
            await serve_channels(ws, pod, ports)
    return ws
