"""``kubectl exec`` and ``kubectl attach`` over SPDY/3.1 (``Upgrade: SPDY/3.1``), what kubectl
speaks with ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`` and what older clients and client-go
users speak.

Used by ``apiserver.py`` for an exec or attach request that asks to upgrade to SPDY (the
WebSocket ones are ``podexec.py``). As kube-apiserver's remotecommand server: the stream
protocol is the first of ``v4.channel.k8s.io`` .. ``channel.k8s.io`` the client offers in
``X-Stream-Protocol-Version`` (answered in the 101), then the client opens one SPDY stream per
role, named by its ``streamType`` header (``error``, ``stdin``, ``stdout``, ``stderr`` unless
a terminal, ``resize`` with a terminal), each answered with a SYN_REPLY. ``exec`` then runs
the command as ``podexec.py`` does, ``attach`` relays the container's main process from now
on: output goes as DATA on the stdout (and stderr) stream, stdin DATA is typed in (FIN closes
the input), each JSON object on the resize stream resizes the terminal, PINGs are echoed, and
at the end the final ``v1 Status`` is sent on the error stream, every stream is finished and
the connection closed. The SPDY framing is ``spdy.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable

import aiohttp.web
from multidict import MultiMapping

from .channels import exit_status, failure_status, resize
from .errors import ApiError
from .pods import Container, PodRuntime, kill, read_pipe, read_terminal, set_window_size, spawn
from .spdy import DataFrame, GoAway, Ping, SpdyError, SpdyFramer, SynStream

__all__ = ["PROTOCOLS", "serve_attach_spdy", "serve_exec_spdy", "wants_spdy"]

PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
_STREAMS_TIMEOUT = 10.0
"""How long the client has to open its streams (kube-apiserver waits as long)."""


def wants_spdy(request: aiohttp.web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").strip().lower() == "spdy/3.1"


def _flag(params: MultiMapping[str], name: str) -> bool:
    return params.get(name, "").lower() in ("true", "1")


class _RawParser:
    """Takes the client's bytes after the 101 (aiohttp's payload parser seat)."""

    def __init__(self, sink: asyncio.StreamReader) -> None:
        self.sink = sink

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.sink.feed_data(data)
        return False, b""

    def feed_eof(self) -> None:
        self.sink.feed_eof()


def _roles(params: MultiMapping[str]) -> set[str]:
    """The streams the client opens for these query parameters (as client-go does)."""
    roles = {"error"} | {r for r in ("stdin", "stdout", "stderr") if _flag(params, r)}
    if len(roles) == 1:
        raise ApiError.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    if _flag(params, "tty"):
        roles.discard("stderr")
        roles.add("resize")
    return roles


async def _upgrade(request: aiohttp.web.BaseRequest, roles: set[str]
                   ) -> tuple[aiohttp.web.StreamResponse, _Session | None]:
    """The 101 with the stream protocol chosen, then the session once the client opened its
    streams (None if it did not in time)."""
    offered = {p.strip() for v in request.headers.getall("X-Stream-Protocol-Version", [])
               for p in v.split(",")}
    version = next((p for p in PROTOCOLS if p in offered), None)
    if version is None:
        raise ApiError(403, "Forbidden", "unable to upgrade: no common stream protocol")
    response = aiohttp.web.StreamResponse(status=101, reason="Switching Protocols")
    response.headers.update({"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                             "X-Stream-Protocol-Version": version})
    response.force_close()
    await response.prepare(request)
    session = _Session(request, roles)
    session.reading = asyncio.create_task(session.read())
    try:
        async with asyncio.timeout(_STREAMS_TIMEOUT):
            await session.ready.wait()
    except TimeoutError:
        await session.close()
        return response, None
    return response, session


async def serve_exec_spdy(
    request: aiohttp.web.BaseRequest,
    runtime: PodRuntime,
    namespace: str,
    name: str,
    params: MultiMapping[str],
) -> aiohttp.web.StreamResponse:
    command = params.getall("command", [])
    if not command:
        raise ApiError.bad_request("you must specify at least one command for the container")
    roles, tty = _roles(params), _flag(params, "tty")
    container = runtime.container(namespace, name, params.get("container"))
    response, session = await _upgrade(request, roles)
    if session is None:
        return response
    try:
        try:
            process, master = await spawn(command, cwd=container.workdir,
                                          env=container.env(tty), tty=tty,
                                          stdin="stdin" in roles)
        except OSError as e:
            session.finish(failure_status(f"error executing command in container: "
                                          f"failed to exec: {e}"))
            return response
        try:
            await session.run(process, master)
            if not session.gone.is_set():
                code = await process.wait()
                session.finish(exit_status(code if code >= 0 else 128 - code, command))
        finally:
            await kill(process)
            if master is not None:
                os.close(master)
    finally:
        await session.close()
    return response


async def serve_attach_spdy(
    request: aiohttp.web.BaseRequest,
    runtime: PodRuntime,
    namespace: str,
    name: str,
    params: MultiMapping[str],
) -> aiohttp.web.StreamResponse:
    roles = _roles(params)
    container = runtime.container(namespace, name, params.get("container"))
    if container.exited.is_set() or container.process is None:
        raise ApiError.bad_request(f"container {container.name} in pod {name} is not running")
    response, session = await _upgrade(request, roles)
    if session is None:
        return response
    queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
    container.attached.add(queue)
    typing = asyncio.create_task(session.type_into(container))
    try:
        while True:
            getting = asyncio.create_task(queue.get())
            gone = asyncio.create_task(session.gone.wait())
            await asyncio.wait({getting, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not getting.done():
                getting.cancel()
                return response  # the client left
            item = getting.result()
            if item is None:
                break
            channel, data = item
            session.output("stdout" if container.tty or channel == 1 else "stderr", data)
        session.finish(exit_status(container.exit_code or 0, container.argv))
        return response
    finally:
        container.attached.discard(queue)
        typing.cancel()
        await asyncio.gather(typing, return_exceptions=True)
        await session.close()


class _Session:
    """One SPDY exec connection: the client's streams and the command's input."""

    def __init__(self, request: aiohttp.web.BaseRequest, roles: set[str]) -> None:
        transport = request.transport
        assert transport is not None
        self.transport = transport
        self.incoming = asyncio.StreamReader()
        request.protocol.set_parser(_RawParser(self.incoming))  # type: ignore[arg-type]
        self.framer = SpdyFramer()
        self.roles = roles
        self.streams: dict[str, int] = {}
        self.ready = asyncio.Event()
        self.gone = asyncio.Event()
        self.inputs: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.reading: asyncio.Task[None] | None = None
        self._resize = b""

    def send(self, data: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)

    async def read(self) -> None:
        """The client's frames until it leaves."""
        try:
            while data := await self.incoming.read(65536):
                for frame in self.framer.feed(data):
                    if isinstance(frame, GoAway):
                        return
                    self._handle(frame)
        except SpdyError:
            self.transport.close()
        finally:
            self.gone.set()
            self.ready.set()

    def _handle(self, frame: object) -> None:
        if isinstance(frame, SynStream):
            role = (frame.headers.get("streamtype") or [""])[0]
            self.streams[role] = frame.stream_id
            self.send(self.framer.syn_reply(frame.stream_id))
            if self.roles <= self.streams.keys():
                self.ready.set()
        elif isinstance(frame, Ping):
            self.send(self.framer.ping(frame.ping_id))
        elif isinstance(frame, DataFrame):
            if frame.stream_id == self.streams.get("stdin"):
                if frame.data:
                    self.inputs.put_nowait(("stdin", frame.data))
                if frame.fin:
                    self.inputs.put_nowait(("eof", b""))
            elif frame.stream_id == self.streams.get("resize"):
                self._resize += frame.data
                *lines, self._resize = self._resize.split(b"\n")
                for line in lines:
                    self.inputs.put_nowait(("resize", line))

    async def run(self, process: asyncio.subprocess.Process, master: int | None) -> None:
        """Relay until the command's output is drained, or the client left."""
        readers: list[asyncio.Task[None]] = []
        if master is not None:
            readers.append(asyncio.create_task(read_terminal(master, self._output("stdout"))))
        else:
            assert process.stdout is not None
            assert process.stderr is not None
            readers.append(asyncio.create_task(read_pipe(process.stdout,
                                                         self._output("stdout"))))
            readers.append(asyncio.create_task(read_pipe(process.stderr,
                                                         self._output("stderr"))))
        typing = asyncio.create_task(self._type(process, master))
        gone = asyncio.create_task(self.gone.wait())
        drained = asyncio.create_task(self._drained(process, readers))
        try:
            await asyncio.wait({gone, drained}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (typing, gone, drained, *readers):
                task.cancel()
            await asyncio.gather(typing, gone, drained, *readers, return_exceptions=True)

    def _output(self, role: str) -> Callable[[bytes], None]:
        return lambda chunk: self.output(role, chunk)

    def output(self, role: str, chunk: bytes) -> None:
        stream = self.streams.get(role)
        if stream is not None:
            self.send(self.framer.data(stream, chunk))

    @staticmethod
    async def _drained(process: asyncio.subprocess.Process,
                       readers: list[asyncio.Task[None]]) -> None:
        await process.wait()
        await asyncio.wait(readers, timeout=2)

    async def _type(self, process: asyncio.subprocess.Process, master: int | None) -> None:
        while True:
            kind, data = await self.inputs.get()
            if kind == "resize":
                size = resize(data)
                if size is not None and master is not None:
                    set_window_size(master, *size)
            elif master is not None:
                os.write(master, data if kind == "stdin" else b"\x04")
            elif process.stdin is not None and not process.stdin.is_closing():
                if kind == "eof":
                    process.stdin.close()
                    continue
                process.stdin.write(data)
                with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                    await process.stdin.drain()

    def finish(self, status: dict[str, object]) -> None:
        """The final status on the error stream, then every stream finished."""
        error = self.streams.get("error")
        if error is not None:
            self.send(self.framer.data(error, json.dumps(status).encode(), fin=True))
        for role, stream in self.streams.items():
            if role != "error":
                self.send(self.framer.data(stream, b"", fin=True))

    async def type_into(self, container: Container) -> None:
        """The client's input to an attached container."""
        while True:
            kind, data = await self.inputs.get()
            if kind == "resize":
                size = resize(data)
                if size is not None and container.master is not None:
                    set_window_size(container.master, *size)
            elif kind == "stdin":
                container.write_stdin(data)
            else:
                container.close_stdin()

    async def close(self) -> None:
        if self.reading is not None:
            self.reading.cancel()
            await asyncio.gather(self.reading, return_exceptions=True)
        self.transport.close()

