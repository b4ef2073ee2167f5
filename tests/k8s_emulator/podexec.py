"""``kubectl exec`` and ``kubectl attach``: the ``pods/exec`` and ``pods/attach``
subresources over WebSocket (``channels.py``) for pods that run (``pods.py``).

Used by ``apiserver.py``. Query parameters as kube-apiserver's: ``command`` (repeated, exec
only), ``container``, ``stdin``, ``stdout``, ``stderr``, ``tty``. ``exec`` runs the command
as a new local process in the container's directory and environment (a pseudo-terminal when
``tty``, which channel 4 resizes), relays its output, and ends with its exit status.
``attach`` relays the container's main process from now on (stdout and stderr on their own
channels unless it has a terminal), feeds it stdin and resizes its terminal; it ends when the
process exits, or, for the client alone, when the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable

import aiohttp.web
from multidict import MultiMapping

from .channels import (
    CLOSE,
    RESIZE,
    STDERR,
    STDIN,
    STDOUT,
    Channels,
    exit_status,
    failure_status,
    resize,
)
from .errors import ApiError
from .pods import Container, PodRuntime, kill, read_pipe, read_terminal, set_window_size, spawn

__all__ = ["serve_attach", "serve_exec"]


def _flag(params: MultiMapping[str], name: str) -> bool:
    return params.get(name, "").lower() in ("true", "1")


def _outputs(params: MultiMapping[str]) -> list[int]:
    return [c for c, name in ((STDOUT, "stdout"), (STDERR, "stderr")) if _flag(params, name)]


def _check_streams(params: MultiMapping[str]) -> None:
    if not any(_flag(params, n) for n in ("stdin", "stdout", "stderr")):
        raise ApiError.bad_request("you must specify at least 1 of stdin, stdout, stderr")


async def serve_exec(
    request: aiohttp.web.BaseRequest,
    runtime: PodRuntime,
    namespace: str,
    name: str,
    params: MultiMapping[str],
) -> aiohttp.web.StreamResponse:
    command = params.getall("command", [])
    if not command:
        raise ApiError.bad_request("you must specify at least one command for the container")
    _check_streams(params)
    container = runtime.container(namespace, name, params.get("container"))
    tty, stdin, outputs = _flag(params, "tty"), _flag(params, "stdin"), _outputs(params)
    channels = await Channels.open(request, outputs)
    if channels.ws.closed:
        return channels.ws
    try:
        process, master = await spawn(
            command, cwd=container.workdir, env=container.env(tty), tty=tty, stdin=stdin
        )
    except OSError as e:
        await channels.finish(
            failure_status(f"error executing command in container: failed to exec: {e}")
        )
        return channels.ws
    try:
        await _relay(channels, process, master, outputs, stdin)
        await _finish(channels, process, command)
    finally:
        await kill(process)
        if master is not None:
            os.close(master)
    return channels.ws


async def _relay(
    channels: Channels,
    process: asyncio.subprocess.Process,
    master: int | None,
    outputs: list[int],
    stdin: bool,
) -> None:
    """Relay until the process has exited and its output is drained, or the client left."""
    sends: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    readers: list[asyncio.Task[None]] = []
    if master is not None:
        readers.append(
            asyncio.create_task(read_terminal(master, lambda c: sends.put_nowait((1, c))))
        )
    else:
        assert process.stdout is not None
        assert process.stderr is not None
        for channel, stream in ((STDOUT, process.stdout), (STDERR, process.stderr)):
            readers.append(asyncio.create_task(read_pipe(stream, _to_queue(sends, channel))))
    client = asyncio.create_task(_from_client(channels, process, master, stdin))
    output_done = asyncio.create_task(_drained(process, readers))
    try:
        while True:
            getting = asyncio.create_task(sends.get())
            await asyncio.wait({getting, output_done, client}, return_when=asyncio.FIRST_COMPLETED)
            if getting.done():
                channel, data = getting.result()
                if channel in outputs or master is not None:
                    await channels.send(channel, data)
                continue
            getting.cancel()
            if client.done():  # the client left: nobody to report to
                return
            while not sends.empty():
                channel, data = sends.get_nowait()
                if channel in outputs or master is not None:
                    await channels.send(channel, data)
            return
    finally:
        for task in (client, output_done, *readers):
            task.cancel()
        await asyncio.gather(client, output_done, *readers, return_exceptions=True)


def _to_queue(queue: asyncio.Queue[tuple[int, bytes]], channel: int) -> Callable[[bytes], None]:
    return lambda chunk: queue.put_nowait((channel, chunk))


async def _drained(process: asyncio.subprocess.Process, readers: list[asyncio.Task[None]]) -> None:
    await process.wait()
    # a terminal reader ends with EIO once no process holds the terminal; a background
    # child that keeps it open does not keep the session
    await asyncio.wait(readers, timeout=2)


async def _from_client(
    channels: Channels, process: asyncio.subprocess.Process, master: int | None, stdin: bool
) -> None:
    async for channel, data in channels.messages():
        if channel == STDIN and stdin:
            if master is not None:
                os.write(master, data)
            elif process.stdin is not None and not process.stdin.is_closing():
                process.stdin.write(data)
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    await process.stdin.drain()
        elif channel == RESIZE and master is not None:
            size = resize(data)
            if size is not None:
                set_window_size(master, *size)
        elif channel == CLOSE and data[:1] == bytes([STDIN]):
            if master is not None:
                os.write(master, b"\x04")
            elif process.stdin is not None:
                process.stdin.close()


async def _finish(
    channels: Channels, process: asyncio.subprocess.Process, command: list[str]
) -> None:
    if channels.ws.closed:
        return
    code = await process.wait()
    await channels.finish(exit_status(code if code >= 0 else 128 - code, command))


async def serve_attach(
    request: aiohttp.web.BaseRequest,
    runtime: PodRuntime,
    namespace: str,
    name: str,
    params: MultiMapping[str],
) -> aiohttp.web.StreamResponse:
    _check_streams(params)
    container = runtime.container(namespace, name, params.get("container"))
    if container.exited.is_set() or container.process is None:
        raise ApiError.bad_request(f"container {container.name} in pod {name} is not running")
    outputs = _outputs(params)
    channels = await Channels.open(request, outputs)
    if channels.ws.closed:
        return channels.ws
    queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
    container.attached.add(queue)
    client = asyncio.create_task(_attach_input(channels, container, _flag(params, "stdin")))
    try:
        while True:
            getting = asyncio.create_task(queue.get())
            await asyncio.wait({getting, client}, return_when=asyncio.FIRST_COMPLETED)
            if not getting.done():
                getting.cancel()
                return channels.ws  # the client left
            item = getting.result()
            if item is None:
                break
            channel, data = item
            if channel in outputs or container.tty:
                await channels.send(STDOUT if container.tty else channel, data)
        await channels.finish(exit_status(container.exit_code or 0, container.argv))
        return channels.ws
    finally:
        container.attached.discard(queue)
        client.cancel()
        await asyncio.gather(client, return_exceptions=True)


async def _attach_input(channels: Channels, container: Container, stdin: bool) -> None:
    async for channel, data in channels.messages():
        if channel == STDIN and stdin:
            container.write_stdin(data)
        elif channel == RESIZE and container.master is not None:
            size = resize(data)
            if size is not None:
                set_window_size(container.master, *size)
        elif channel == CLOSE and data[:1] == bytes([STDIN]) and stdin:
            container.close_stdin()
