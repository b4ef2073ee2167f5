"""The kube front's HTTP/2 server (``limen.proxy.kube.kube_h2``) with the ``h2`` library as
the client over real TCP, and a small HTTP/1.1 server standing in for the kube agent's end of
the tunnel connections: concurrent streams, ``:authority`` as ``Host`` and hop-by-hop fields
dropped, kept-alive agent connections reused, a chunked response streamed piece by piece, a
request body chunked or with its length, a client reset ending the agent's request, flow
control with a reader that does not acknowledge (the proxy stops reading the agent), a dial
outliving its reset stream kept for the next one, a refused dial answered with its Status,
GOAWAY on shutdown and after an idle time. Attacks: more streams than the limit
(REFUSED_STREAM, audited once), an oversized header list and a malformed frame (GOAWAY,
logged and audited), a body over the limit (413, audited).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

from limen.proxy.kube.kube_h2 import H2Limits, H2Session
from limen.proxy.kube.kube_status import StreamRefused

DEADLINE = 10.0


@dataclass
class Agent:
    """HTTP/1.1 server answering like the kube agent: ``/json`` echoes the request (with
    Content-Length), ``/stream`` sends chunks from ``pieces`` (None ends it), ``/big``
    sends ``big`` bytes (Content-Length) through a small socket buffer, ``/upload`` reads
    the body and answers its size."""

    pieces: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)
    big: int = 4 << 20
    big_sent: int = 0
    big_blocked: asyncio.Event = field(default_factory=asyncio.Event)
    dials: int = 0
    requests: int = 0
    closed_streams: int = 0
    stream_closed: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.requests += 1
                lines = raw.decode().split("\r\n")
                method, target, _ = lines[0].split(" ")
                headers = [tuple(x.split(": ", 1)) for x in lines[1:] if x]
                names = {k.lower(): v for k, v in headers}
                body = b""
                if names.get("transfer-encoding") == "chunked":
                    while (size := int((await reader.readuntil(b"\r\n"))[:-2], 16)):
                        body += await reader.readexactly(size + 2)
                        body = body[:-2]
                    await reader.readexactly(2)
                elif "content-length" in names:
                    body = await reader.readexactly(int(names["content-length"]))
                if target.startswith("/stream"):
                    await self._stream(reader, writer)
                    return
                if target.startswith("/big"):
                    await self._big(writer)
                    continue
                answer = json.dumps({"method": method, "target": target, "headers": headers,
                                     "body": len(body)}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
                             + f"Content-Length: {len(answer)}\r\n\r\n".encode() + answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        eof = asyncio.ensure_future(reader.read(1))
        try:
            while True:
                piece = asyncio.ensure_future(self.pieces.get())
                done, _ = await asyncio.wait({piece, eof}, return_when=asyncio.FIRST_COMPLETED)
                if eof in done:
                    piece.cancel()
                    self.closed_streams += 1
                    self.stream_closed.set()
                    return
                data = piece.result()
                if data is None:
                    writer.write(b"0\r\n\r\n")
                    await writer.drain()
                    return
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
        finally:
            eof.cancel()

    async def _big(self, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        writer.transport.set_write_buffer_limits(high=16384)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {self.big}\r\n\r\n".encode())
        piece = b"x" * 16384
        while self.big_sent < self.big:
            writer.write(piece)
            self.big_sent += len(piece)
            if writer.transport.get_write_buffer_size() > 16384:  # drain() waits now
                self.big_blocked.set()
            await writer.drain()


@dataclass
class Front:
    agent: Agent
    port: int
    sessions: list[H2Session]
    audited: list[str]


@contextlib.asynccontextmanager
async def front(limits: H2Limits | None = None, dial_refusal: StreamRefused | None = None,
                dial_gate: asyncio.Event | None = None,
                dialled: asyncio.Event | None = None) -> AsyncIterator[Front]:
    agent = Agent()
    agent_port = await agent.start()
    sessions: list[H2Session] = []
    audited: list[str] = []

    async def dial() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if dial_refusal is not None:
            raise dial_refusal
        agent.dials += 1
        if dial_gate is not None:
            await dial_gate.wait()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", agent_port))
        streams = await asyncio.open_connection(sock=sock, limit=16384)
        if dialled is not None:
            dialled.set()
        return streams

    async def audit(reason: str) -> None:
        audited.append(reason)

    handlers: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        session = H2Session(reader, writer, dial, audit, limits=limits, name="test")
        sessions.append(session)
        try:
            await session.serve()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield Front(agent, int(server.sockets[0].getsockname()[1]), sessions, audited)
    finally:
        for session in sessions:
            session.goaway()
        await asyncio.gather(*handlers, return_exceptions=True)
        server.close()
        await server.wait_closed()
        await agent.stop()


@dataclass
class Response:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    ended: bool = False
    reset: ErrorCodes | int | None = None


class Client:
    """An h2 client; ``ack``: acknowledge DATA as it comes (a reader keeping up)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.responses: dict[int, Response] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.pongs = 0
        self.ack = True

    @classmethod
    async def open(cls, port: int, *, start: bool = True) -> Client:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        client.conn.initiate_connection()
        if start:
            client.flush()
        return client

    @classmethod
    @contextlib.asynccontextmanager
    async def connected(cls, port: int, *, start: bool = True) -> AsyncIterator[Client]:
        """:meth:`open`, closed as the block ends."""
        client = await cls.open(port, start=start)
        try:
            yield client
        finally:
            await client.close()

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    def request(self, path: str, *, method: str = "GET", body: bytes | None = None,
                extra: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "https"), (":authority", "kube.example:443"),
                   (":path", path), *(extra or [])]
        self.conn.send_headers(stream_id, headers, end_stream=end and body is None)
        self.responses[stream_id] = Response()
        if body is not None:
            self.send(stream_id, body, end=end)
        self.flush()
        return stream_id

    def send(self, stream_id: int, body: bytes, *, end: bool) -> None:
        for start in range(0, len(body), 16384):
            self.conn.send_data(stream_id, body[start:start + 16384],
                                end_stream=end and start + 16384 >= len(body))
        self.flush()

    async def settled(self) -> None:
        """Once the server's SETTINGS are in force."""
        await self.until(lambda: self.conn.remote_settings.initial_window_size == 1 << 20,
                         "the server's SETTINGS")

    async def until(self, done: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(DEADLINE):
            while not done():
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._event(event)
                self.flush()
        assert done(), what

    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.responses[event.stream_id].headers = {
                k.decode(): v.decode() for k, v in event.headers}
        elif isinstance(event, h2.events.DataReceived):
            self.responses[event.stream_id].data += event.data
            if self.ack:
                self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                    event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.responses.setdefault(event.stream_id, Response()).reset = event.error_code
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, h2.events.PingAckReceived):
            self.pongs += 1

    async def round_trip(self) -> None:
        """A PING answered: the server has handled everything before it."""
        pongs = self.pongs
        self.conn.ping(b"12345678")
        self.flush()
        await self.until(lambda: self.pongs > pongs, "the PING's answer")


def _seen(response: Response) -> dict[str, Any]:
    return json.loads(response.data)  # type: ignore[no-any-return]


async def test_concurrent_streams_become_http1_requests_on_reused_connections() -> None:
    async with front() as f, Client.connected(f.port) as client:
        ids = [client.request(f"/json?i={i}", extra=[("te", "trailers"), ("x-a", "1"),
                                                     ("cookie", "a=1"), ("cookie", "b=2")])
               for i in range(6)]
        await client.until(lambda: all(client.responses[i].ended for i in ids),
                           "every stream answered")
        for n, stream_id in enumerate(ids):
            response = client.responses[stream_id]
            assert response.headers[":status"] == "200"
            assert "connection" not in response.headers
            assert "keep-alive" not in response.headers
            seen = _seen(response)
            assert seen["target"] == f"/json?i={n}"
            headers = dict(seen["headers"])
            assert headers["Host"] == "kube.example:443"
            assert headers["x-a"] == "1"
            assert headers["cookie"] == "a=1; b=2"
            assert "te" not in headers
        dials = f.agent.dials
        assert dials <= 6
        for i in range(4):  # one after the other: the kept-alive connections are reused
            stream_id = client.request(f"/json?again={i}")
            await client.until(lambda s=stream_id: client.responses[s].ended, "answered")
        assert f.agent.dials == dials
        assert f.agent.requests == 10


async def test_request_bodies_chunked_or_with_their_length() -> None:
    async with front() as f, Client.connected(f.port) as client:
        await client.settled()
        chunked = client.request("/upload", method="POST", body=b"a" * 50_000, end=False)
        client.send(chunked, b"b" * 20_000, end=True)
        sized = client.request("/upload", method="PUT", body=b"c" * 1000,
                               extra=[("content-length", "1000")])
        empty = client.request("/upload", method="POST")
        await client.until(lambda: all(client.responses[s].ended
                                       for s in (chunked, sized, empty)), "answered")
        first = _seen(client.responses[chunked])
        assert first["body"] == 70_000
        assert ["Transfer-Encoding", "chunked"] in first["headers"]
        second = _seen(client.responses[sized])
        assert (second["body"], second["method"]) == (1000, "PUT")
        assert ["Content-Length", "1000"] in second["headers"]
        assert ["Content-Length", "0"] in _seen(client.responses[empty])["headers"]


async def test_a_chunked_response_streams_as_it_comes() -> None:
    async with front() as f, Client.connected(f.port) as client:
        stream_id = client.request("/stream?watch=true")
        response = client.responses[stream_id]
        await client.until(lambda: response.headers.get(":status") == "200", "headers")
        for word in (b"first\n", b"second\n"):
            f.agent.pieces.put_nowait(word)
            await client.until(lambda w=word: response.data.endswith(w), "the piece")
        assert not response.ended
        f.agent.pieces.put_nowait(None)
        await client.until(lambda: response.ended, "the end of the stream")
        assert response.data == b"first\nsecond\n"


async def test_a_client_reset_ends_the_agent_request() -> None:
    async with front() as f, Client.connected(f.port) as client:
        stream_id = client.request("/stream")
        await client.until(lambda: ":status" in client.responses[stream_id].headers,
                           "headers")
        client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
        client.flush()
        async with asyncio.timeout(DEADLINE):
            await f.agent.stream_closed.wait()
        assert f.sessions[0].active_streams == 0
        after = client.request("/json")  # the connection goes on
        await client.until(lambda: client.responses[after].ended, "answered")


async def test_a_dial_outliving_its_reset_stream_is_kept_for_the_next() -> None:
    gate, dialled = asyncio.Event(), asyncio.Event()
    async with front(dial_gate=gate, dialled=dialled) as f, Client.connected(f.port) as client:
        first = client.request("/json?first")
        await client.round_trip()
        assert f.agent.dials == 1
        client.conn.reset_stream(first, ErrorCodes.CANCEL)
        client.flush()
        await client.round_trip()
        assert f.sessions[0].active_streams == 0
        gate.set()
        async with asyncio.timeout(DEADLINE):
            await dialled.wait()
        await client.round_trip()
        second = client.request("/json?second")
        await client.until(lambda: client.responses[second].ended, "answered")
        assert _seen(client.responses[second])["target"] == "/json?second"
        assert (f.agent.dials, f.agent.requests) == (1, 1)


async def test_a_slow_reader_stops_the_proxy_reading_the_agent() -> None:
    async with front() as f:
        client = await Client.open(f.port)
        client.ack = False
        try:
            stream_id = client.request("/big")
            response = client.responses[stream_id]
            await client.until(lambda: len(response.data) == 65535, "the initial window")
            async with asyncio.timeout(DEADLINE):  # until the agent cannot write any more
                await f.agent.big_blocked.wait()
                while True:  # the proxy goes on serving the connection, reading no more
                    sent = f.agent.big_sent
                    await client.round_trip()
                    if f.agent.big_sent == sent:
                        break
            assert sent < 1 << 20, sent  # of 4 MiB: socket buffers and one piece, no more
            assert len(response.data) == 65535
            client.ack = True
            client.conn.acknowledge_received_data(len(response.data), stream_id)
            client.flush()
            await client.until(lambda: response.ended, "the whole body")
            assert len(response.data) == f.agent.big
        finally:
            await client.close()


async def test_a_refused_dial_is_a_status_on_the_stream() -> None:
    refusal = StreamRefused(403, "Limen: access to kube cluster emu denied", audited=True)
    async with front(dial_refusal=refusal) as f, Client.connected(f.port) as client:
        stream_id = client.request("/api")
        await client.until(lambda: client.responses[stream_id].ended, "answered")
        response = client.responses[stream_id]
        assert response.headers[":status"] == "403"
        status = json.loads(response.data)
        assert (status["kind"], status["reason"], status["code"]) == \
                ("Status", "Forbidden", 403)
        assert "denied" in status["message"]
        assert f.audited == []  # the router audited it


async def test_goaway_when_the_proxy_stops() -> None:
    async with front() as f, Client.connected(f.port) as client:
        stream_id = client.request("/stream")
        await client.until(lambda: ":status" in client.responses[stream_id].headers,
                           "headers")
        f.sessions[0].goaway()
        await client.until(lambda: client.terminated is not None, "GOAWAY")
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.NO_ERROR
        assert client.terminated.last_stream_id == stream_id
        async with asyncio.timeout(DEADLINE):
            await f.sessions[0].ended.wait()


async def test_an_idle_connection_gets_goaway() -> None:
    async with front(H2Limits(idle_timeout=0.3)) as f, Client.connected(f.port) as client:
        stream_id = client.request("/json")
        await client.until(lambda: client.responses[stream_id].ended, "answered")
        await client.until(lambda: client.terminated is not None, "GOAWAY")
        assert client.terminated is not None
        assert (client.terminated.error_code, client.terminated.last_stream_id) == \
                (ErrorCodes.NO_ERROR, stream_id)
        assert f.audited == []


# attacks


async def test_more_streams_than_the_limit_are_refused_and_audited_once() -> None:
    async with front(H2Limits(max_streams=4)) as f, \
            Client.connected(f.port, start=False) as client:  # before the server SETTINGS
        ids = [client.request("/stream") for _ in range(7)]
        await client.until(lambda: sum(client.responses[i].reset is not None
                                       for i in ids) == 3, "three streams refused")
        assert [client.responses[i].reset for i in ids[4:]] == \
            [ErrorCodes.REFUSED_STREAM] * 3
        assert all(client.responses[i].reset is None for i in ids[:4])
        assert f.audited == [
            "HTTP/2: more than 4 concurrent streams; stream 9 refused (REFUSED_STREAM)"]
        await client.until(lambda: all(":status" in client.responses[i].headers
                                       for i in ids[:4]), "the others served")


async def test_the_advertised_limits() -> None:
    async with front() as f, Client.connected(f.port) as client:
        await client.until(lambda: client.conn.remote_settings.max_concurrent_streams
                           == 250, "the server's SETTINGS")
        assert client.conn.remote_settings.max_header_list_size == 64 * 1024
        assert client.conn.remote_settings.enable_push == 0
        assert H2Limits().max_body == 64 << 20


async def test_an_oversized_header_list_ends_the_connection(
        caplog: pytest.LogCaptureFixture) -> None:
    async with front() as f, Client.connected(f.port) as client:
        with caplog.at_level(logging.WARNING, "limen.proxy.kube.kube_h2"):
            client.request("/json", extra=[("x-big", "y" * 70_000)])
            await client.until(lambda: client.terminated is not None, "GOAWAY")
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert len(f.audited) == 1
        assert "HTTP/2 protocol error (GOAWAY ENHANCE_YOUR_CALM)" in f.audited[0]
        assert "protocol error" in caplog.text
        assert f.agent.requests == 0


async def test_a_malformed_frame_ends_the_connection_with_goaway(
        caplog: pytest.LogCaptureFixture) -> None:
    async with front() as f, Client.connected(f.port) as client:
        await client.until(lambda: client.conn.remote_settings.max_concurrent_streams
                           == 250, "the server's SETTINGS")
        with caplog.at_level(logging.WARNING, "limen.proxy.kube.kube_h2"):
            # a DATA frame on stream 0 (the connection): a connection error
            client.writer.write(struct.pack(">I", 4)[1:] + b"\x00\x00"
                                + struct.pack(">I", 0) + b"oops")
            await client.until(lambda: client.terminated is not None, "GOAWAY")
        assert client.terminated is not None
        assert client.terminated.error_code == ErrorCodes.PROTOCOL_ERROR
        assert "HTTP/2 protocol error (GOAWAY PROTOCOL_ERROR)" in f.audited[0]
        assert "protocol error, GOAWAY PROTOCOL_ERROR" in caplog.text
        async with asyncio.timeout(DEADLINE):
            await f.sessions[0].ended.wait()


async def test_a_body_over_the_limit_is_refused() -> None:
    async with front(H2Limits(max_body=1000)) as f, Client.connected(f.port) as client:
        await client.settled()
        declared = client.request("/upload", method="POST", body=b"x" * 10,
                                  extra=[("content-length", "5000")], end=False)
        streamed = client.request("/upload", method="POST", body=b"x" * 3000, end=False)
        await client.until(lambda: all(client.responses[s].ended
                                       for s in (declared, streamed)), "answered")
        for stream_id in (declared, streamed):
            assert client.responses[stream_id].headers[":status"] == "413"
            assert json.loads(client.responses[stream_id].data)["code"] == 413
        assert len(f.audited) == 2
        assert all("at most 1000" in a or "larger than 1000" in a for a in f.audited)
        after = client.request("/json")  # the connection's window was given back
        await client.until(lambda: client.responses[after].ended, "answered")
