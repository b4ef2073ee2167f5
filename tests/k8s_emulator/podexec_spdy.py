"""``kubectl exec`` over SPDY/3.1 (``Upgrade: SPDY/3.1``), what kubectl speaks with
``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`` and what older clients and client-go users speak.

Used by ``apiserver.py`` for an exec request that asks to upgrade to SPDY (the WebSocket one is
``podexec.py``). As kube-apiserver's remotecommand server: the stream protocol is the first of
``v4.channel.k8s.io`` .. ``channel.k8s.io`` the client offers in ``X-Stream-Protocol-Version``
(answered in the 101), then the client opens one SPDY stream per role, named by its
``streamType`` header (``error``, ``stdin``, ``stdout``, ``stderr`` unless a terminal,
``resize`` with a terminal), each answered with a SYN_REPLY. The command then runs as in
``podexec.py``: its output goes as DATA on the stdout (and stderr) stream, stdin DATA is typed
into it (FIN closes its input), each JSON object on the resize stream resizes its terminal,
PINGs are echoed, and at the end the final ``v1 Status`` is sent on the error stream, every
stream is finished and the connection closed. The SPDY framing is ``spdy.py``'s.
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
from .pods import PodRuntime, kill, read_pipe, read_terminal, set_window_size, spawn
from .spdy import DataFrame, GoAway, Ping, SpdyError, SpdyFramer, SynStream

__all__ = ["PROTOCOLS", "serve_exec_spdy", "wants_spdy"]

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
    tty = _flag(params, "tty")
    roles = {"error"} | {r for r in ("stdin", "stdout", "stderr") if _flag(params, r)}
    if len(roles) == 1:
        raise ApiError.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    if tty:
        roles.discard("stderr")
        roles.add("resize")
    offered = {p.strip() for v in request.headers.getall("X-Stream-Protocol-Version", [])
               for p in v.split(",")}
    version = next((p for p in PROTOCOLS if p in offered), None)
    if version is None:
        raise ApiError(403, "Forbidden", "unable to upgrade: no common stream protocol")
    container = runtime.container(namespace, name, params.get("container"))
    response = aiohttp.web.StreamResponse(status=101, reason="Switching Protocols")
    response.headers.update({"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
                             "X-Stream-Protocol-Version": version})
    response.force_close()
    await response.prepare(request)
    session = _Session(request, roles)
    reading = asyncio.create_task(session.read())
    try:
        try:
            async with asyncio.timeout(_STREAMS_TIMEOUT):
                await session.ready.wait()
        except TimeoutError:
            return response
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
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        session.close()
    return response


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
        def output(chunk: bytes) -> None:
            stream = self.streams.get(role)
            if stream is not None:
                self.send(self.framer.data(stream, chunk))
        return output

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

    def close(self) -> None:
        self.transport.close()

