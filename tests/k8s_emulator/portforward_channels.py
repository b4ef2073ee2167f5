"""Port-forward over the WebSocket channel protocol (``v4.channel.k8s.io``), the kubelet's
other port-forward protocol, which the ``kubernetes`` Python client uses
(``kubernetes.stream.portforward``).

Used by ``portforward.py`` when the client asks for that subprotocol (or none). The ports
are the ``ports`` query parameters (repeated or comma-separated). Port number i has data
channel 2i and error channel 2i+1; the server first sends each channel the port as two
little-endian bytes, connects to the pod's port, relays bytes on the data channel and
writes a failure to connect on the error channel. The WebSocket closes once every port's
connection has ended, or the client closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import aiohttp
import aiohttp.web
from multidict import MultiMapping

from .errors import ApiError
from .pods import Pod

__all__ = ["CHANNEL_PROTOCOLS", "forwarded_ports", "serve_channels"]

CHANNEL_PROTOCOLS = ("v4.channel.k8s.io",)


def forwarded_ports(params: MultiMapping[str]) -> list[int]:
    """The ports asked for, or 400 as kube-apiserver answers."""
    ports: list[int] = []
    for value in params.getall("ports", []):
        for item in value.split(","):
            if not item.isdigit() or not 0 < int(item) < 65536:
                raise ApiError.bad_request(f'invalid port "{item}"')
            ports.append(int(item))
    if not ports:
        raise ApiError.bad_request('query parameter "ports" is required')
    return ports


async def serve_channels(ws: aiohttp.web.WebSocketResponse, pod: Pod, ports: list[int]) -> None:
    writers: dict[int, asyncio.StreamWriter] = {}
    lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with lock:
            if not ws.closed:
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await ws.send_bytes(bytes([channel]) + data)

    async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | str:
        local = pod.local_port(port)
        try:
            return await asyncio.open_connection("127.0.0.1", local)
        except OSError as e:
            return (
                f"error forwarding port {port} to pod {pod.name}, uid {pod.uid}: "
                f"dial tcp 127.0.0.1:{local}: connect: {e.strerror or e}"
            )

    async def forward(index: int, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                await send(2 * index, data)
        except OSError:
            pass
        finally:
            writer = writers.pop(index)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    # connected before the client may send, so nothing it sends is lost
    connections = [await connect(port) for port in ports]
    for index, port in enumerate(ports):
        for channel in (2 * index, 2 * index + 1):
            await send(channel, struct.pack("<H", port))
    readers: list[tuple[int, asyncio.StreamReader]] = []
    for index, connection in enumerate(connections):
        if isinstance(connection, str):
            await send(2 * index + 1, connection.encode())
        else:
            readers.append((index, connection[0]))
            writers[index] = connection[1]
    forwards = asyncio.gather(*(forward(i, r) for i, r in readers))
    client = asyncio.create_task(_from_client(ws, writers))
    try:
        waiting: list[asyncio.Future[Any]] = [forwards, client]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    finally:
        client.cancel()
        for writer in list(writers.values()):
            writer.close()
        forwards.cancel()
        await asyncio.gather(client, forwards, return_exceptions=True)
        await ws.close()


async def _from_client(
    ws: aiohttp.web.WebSocketResponse, writers: dict[int, asyncio.StreamWriter]
) -> None:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.BINARY or not message.data:
            continue
        channel, data = message.data[0], message.data[1:]
        writer = writers.get(channel // 2)
        if channel % 2 == 0 and writer is not None and data:
            writer.write(data)
            with contextlib.suppress(ConnectionResetError):
                await writer.drain()
