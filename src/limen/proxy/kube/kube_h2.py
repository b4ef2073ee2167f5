"""HTTP/2 from kubectl on the kube front: one client connection whose ALPN chose ``h2``,
each of its streams relayed as one HTTP/1.1 request to the kube agent.

::

    kubectl ══ h2 (the h2 library, sans-IO) ══▶ H2Session ── stream 1 ─▶ tunnel connection ─▶
                                                        ── stream 3 ─▶ tunnel connection ─▶ agent
                                                (kept alive and reused: upstream_pool)

Each stream is routed on its own (``route``: the kube cluster its ``:path`` names, with the
connection's certificate and server name; :mod:`limen.proxy.kube.kube_route`): streams of one
connection naming different kube clusters each go to their own, each dial checked, and the
tunnel connections are kept per route. A stream whose route is refused gets the refusal's
``Status`` (the others go on). A stream's header list becomes an HTTP/1.1 head
(:mod:`~limen.proxy.kube.h2_translate`:
``:authority`` as ``Host``, hop-by-hop fields dropped), its DATA the request body
(``Content-Length`` or chunked); the agent's response (:mod:`~limen.proxy.kube.h1_upstream`)
goes back as HEADERS and DATA as it arrives, so ``watch`` and ``logs -f`` stream. Upgrades
(exec, attach, port-forward) are not served here: client-go opens an HTTP/1.1 connection for
them, and this server does not offer extended CONNECT.

Flow control both ways, so that neither side makes the proxy buffer without bound: a request
body's DATA is acknowledged (WINDOW_UPDATE) only once written to the agent; a response is read
from the agent only as far as the stream's and the connection's send windows allow (one piece
of at most 64 KiB per stream waits).

Limits: :attr:`H2Limits.max_streams` concurrent streams (one more is reset with
REFUSED_STREAM), :attr:`H2Limits.max_routes` kube clusters named on one connection (400),
the header list size (a larger one ends the connection with GOAWAY ENHANCE_YOUR_CALM), a
request body of at most :attr:`H2Limits.max_body` bytes (413). A malformed frame ends the
connection with GOAWAY, and so does :attr:`H2Limits.idle_timeout` without a stream. A client
resetting a stream ends its agent
request (the tunnel connection is dropped). :meth:`H2Session.goaway` (the proxy stopping)
sends GOAWAY and ends the connection. Each refusal here is a Kubernetes ``Status`` on its
stream (or the reset, or the GOAWAY) and is audited through ``audit``; the refusals of the
dial (certificate, cluster, roles) are audited by the router. Called by
:mod:`limen.proxy.kube.kube_front`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from limen.errors import BadParameter, ConnectionProblem
from limen.proxy.kube.h1_upstream import read_body, read_response_head
from limen.proxy.kube.h2_translate import (
    H2Request,
    ResponseHead,
    h2_response_headers,
    request_from_h2,
    request_head,
)
from limen.proxy.kube.kube_status import StreamRefused, status_body
from limen.proxy.kube.upstream_pool import Dial, Upstream, UpstreamPool

__all__ = ["ALPN_H2", "Audit", "H2Limits", "H2Session", "Route"]

log = logging.getLogger(__name__)

ALPN_H2 = "h2"
Audit = Callable[[str], Awaitable[None]]
"""Writes a failed ``kube.request`` event with the reason."""
Route = Callable[[str], tuple[str, Dial]]
"""A stream's route from its request target: a key (streams with the same key share tunnel
connections) and the dial; raises BadParameter for a target naming no valid route."""
_READ = 64 * 1024
_UNLIMITED = 2**31 - 1
_LAST_CHUNK = b"0\r\n\r\n"


@dataclass(frozen=True)
class H2Limits:
    max_streams: int = 250
    max_header_list: int = 64 * 1024
    """Bytes of a header list as HPACK counts them (the HTTP/1.1 path's head limit)."""
    max_body: int = 64 << 20
    """A request body's bytes (the agent's limit for HTTP/1.1)."""
    stream_window: int = 1 << 20
    connection_window: int = 16 << 20
    """The most request body bytes buffered for the whole connection."""
    max_routes: int = 32
    """Distinct routes (kube clusters named) on one connection, each with its tunnel
    connections; a stream naming one more is refused (400)."""
    idle_timeout: float = 300.0
    """A connection without a stream this long gets GOAWAY (the agent's keep-alive limit)."""


class _Advertised(h2.settings.Settings):
    """Local settings whose MAX_CONCURRENT_STREAMS is advertised but enforced by the
    session (REFUSED_STREAM, a stream error) instead of by h2 (a connection error)."""

    @property
    def max_concurrent_streams(self) -> int:
        return _UNLIMITED

    @max_concurrent_streams.setter
    def max_concurrent_streams(self, value: int) -> None:
        self[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = value


class _BodyTooLarge(Exception):
    pass


@dataclass
class _Stream:
    stream_id: int
    headers: list[tuple[bytes, bytes]]
    has_body: bool
    """The client did not end the stream with its headers."""
    body: asyncio.Queue[tuple[bytes, int] | _BodyTooLarge | None] = field(
        default_factory=asyncio.Queue)
    ended: bool = False
    """The client ended its side (all of the request body is queued)."""
    received: int = 0
    finished: bool = False
    """The stream's work is over: further DATA is acknowledged at once."""
    answered: bool = False
    """Response headers were sent."""
    task: asyncio.Task[None] | None = None


class H2Session:
    """Serves one HTTP/2 client connection (see the module)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dial: Dial,
                 audit: Audit, *, limits: H2Limits | None = None, name: str = "",
                 route: Route | None = None) -> None:
        """``route``: each stream's (default: every stream ``dial``'s)."""
        self._reader = reader
        self._writer = writer
        self._route: Route = route or (lambda _target: ("", dial))
        self._pools: dict[str, UpstreamPool] = {}
        self._audit = audit
        self.limits = limits or H2Limits()
        self._name = name
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self._conn = h2.connection.H2Connection(config)
        self._conn.local_settings = _Advertised(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.limits.max_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: self.limits.max_header_list,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.limits.stream_window,
            h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self._conn.decoder.max_header_list_size = self.limits.max_header_list
        self._streams: dict[int, _Stream] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._refused_streams = 0
        self._closed = False
        self._idle: asyncio.Timeout | None = None
        self.ended = asyncio.Event()
        """Set once :meth:`serve` has ended every stream."""

    @property
    def active_streams(self) -> int:
        return len(self._streams)

    async def serve(self) -> None:
        """Until the client or :meth:`goaway` ends the connection."""
        self._conn.initiate_connection()
        extra = self.limits.connection_window - self._conn.inbound_flow_control_window
        if extra > 0:
            self._conn.increment_flow_control_window(extra)
        self._flush()
        try:
            while not self._closed:
                try:
                    async with asyncio.timeout(None) as self._idle:
                        self._idle_check()
                        data = await self._reader.read(_READ)
                except TimeoutError:
                    log.info("kube front h2 %s: idle for %gs, GOAWAY", self._name,
                             self.limits.idle_timeout)
                    self.goaway()
                    break
                finally:
                    self._idle = None
                if not data or self._closed:
                    break
                try:
                    events = self._conn.receive_data(data)
                except h2.exceptions.ProtocolError as err:
                    await self._protocol_error(err)
                    return
                for event in events:
                    self._event(event)
                self._flush()
                await self._writer.drain()
        except (OSError, ssl.SSLError, RuntimeError) as err:
            log.debug("kube front h2 %s: %s", self._name, err)
        finally:
            await self._end()

    def goaway(self) -> None:
        """The proxy stops: GOAWAY (no error, the last stream seen), then the end."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._conn.close_connection(ErrorCodes.NO_ERROR)
        self._flush()
        self._writer.close()  # after what is buffered: the client reads the GOAWAY first

    async def _protocol_error(self, err: h2.exceptions.ProtocolError) -> None:
        """The GOAWAY h2 prepared, logged and audited; the connection ends."""
        self._closed = True
        self._flush()
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError, TimeoutError):
            async with asyncio.timeout(5):
                await self._writer.drain()
        code = getattr(err, "error_code", None) or ErrorCodes.PROTOCOL_ERROR
        name = code.name if isinstance(code, ErrorCodes) else str(code)
        log.warning("kube front h2 %s: protocol error, GOAWAY %s: %s", self._name, name, err)
        await self._audited(f"HTTP/2 protocol error (GOAWAY {name}): {err}")

    async def _audited(self, reason: str) -> None:
        """Audit a refusal; one that cannot be written is logged (the refusal stands)."""
        try:
            await self._audit(reason)
        except Exception:
            log.exception("kube front h2 %s: a refusal could not be audited: %s", self._name,
                          reason)

    async def _end(self) -> None:
        self._closed = True
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, *self._background, return_exceptions=True)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()
        self.ended.set()

    def _idle_check(self) -> None:
        """While the client's next bytes are awaited: the idle deadline, none with a stream."""
        if self._idle is not None:
            self._idle.reschedule(None if self._streams else
                                  asyncio.get_running_loop().time() + self.limits.idle_timeout)

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work
        task = asyncio.create_task(run(), name=f"kube h2 {self._name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # the client's events

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None:
                stream.ended = True
                stream.body.put_nowait(None)
        elif isinstance(event, h2.events.StreamReset):
            stream = self._streams.get(event.stream_id or 0)
            if stream is not None and stream.task is not None:
                stream.task.cancel()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window_opened()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._closed = True  # the client's GOAWAY: nothing more can be sent

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id or 0
        if len(self._streams) >= self.limits.max_streams:
            self._conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self._refused_streams += 1
            if self._refused_streams == 1:  # once a connection: a flood is one event
                self._spawn(self._audited(
                    f"HTTP/2: more than {self.limits.max_streams} concurrent streams; "
                    f"stream {stream_id} refused (REFUSED_STREAM)"))
            return
        stream = _Stream(stream_id, list(event.headers or []), event.stream_ended is None)
        self._streams[stream_id] = stream
        stream.task = asyncio.create_task(self._serve_stream(stream),
                                          name=f"kube h2 stream {stream_id}")

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id, data = event.stream_id or 0, event.data or b""
        flow = event.flow_controlled_length or 0
        stream = self._streams.get(stream_id)
        if stream is None or stream.finished:
            self._ack(stream_id, flow)
            return
        stream.received += len(data)
        if stream.received > self.limits.max_body:
            stream.finished = True
            stream.body.put_nowait(_BodyTooLarge())
            self._ack(stream_id, flow)
            return
        stream.body.put_nowait((data, flow))

    def _ack(self, stream_id: int, flow: int) -> None:
        if flow and not self._closed:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self._conn.acknowledge_received_data(flow, stream_id)
            self._flush()

    def _window_opened(self) -> None:
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _wait_window(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            self._waiters.discard(waiter)

    # one stream

    def _pool(self, target: str) -> UpstreamPool:
        """The tunnel connections of the route ``target`` names (BadParameter: none;
        StreamRefused beyond :attr:`H2Limits.max_routes` routes)."""
        key, dial = self._route(target)
        pool = self._pools.get(key)
        if pool is None:
            if len(self._pools) >= self.limits.max_routes:
                raise StreamRefused(400, f"Limen: more than {self.limits.max_routes} kube "
                                         "clusters named on one connection")
            pool = self._pools[key] = UpstreamPool(dial)
        return pool

    async def _serve_stream(self, stream: _Stream) -> None:
        upstream: Upstream | None = None
        pool: UpstreamPool | None = None
        reusable = False
        try:
            request = request_from_h2(stream.headers)
            if request.content_length is not None and \
                    request.content_length > self.limits.max_body:
                raise StreamRefused(413, f"request body of {request.content_length} bytes "
                                         f"(at most {self.limits.max_body})")
            pool = self._pool(request.path)
            upstream, reusable = await self._exchange(stream, request, pool)
        except BadParameter as err:
            await self._refuse(stream, StreamRefused(400, f"Limen: {err}"))
        except StreamRefused as err:
            await self._refuse(stream, err)
        except _BodyTooLarge:
            await self._refuse(stream, StreamRefused(
                413, f"Limen: request body larger than {self.limits.max_body} bytes"))
        except ConnectionProblem as err:
            await self._broken(stream, str(err))
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as err:
            await self._broken(stream, f"the kube agent's connection ended: {err}")
        except h2.exceptions.ProtocolError as err:  # the client reset it, or the connection
            log.debug("kube front h2 %s: stream %d: %s", self._name, stream.stream_id, err)
        finally:
            stream.finished = True
            self._streams.pop(stream.stream_id, None)
            self._idle_check()
            self._release_body(stream)
            if upstream is not None:
                if reusable and pool is not None:
                    await pool.release(upstream)
                else:
                    upstream.writer.transport.abort()

    async def _exchange(self, stream: _Stream, request: H2Request, pool: UpstreamPool
                        ) -> tuple[Upstream, bool]:
        """Send ``request`` on a tunnel connection of ``pool`` and relay the response; the
        connection and whether it can be reused."""
        head, chunked = request_head(request, has_body=stream.has_body)
        has_body = stream.has_body
        upstream = await pool.acquire()
        pump: asyncio.Task[bool] | None = None
        try:
            upstream.writer.write(head)
            if has_body:
                pump = asyncio.create_task(self._pump(stream, upstream, chunked),
                                           name=f"kube h2 body {stream.stream_id}")
            else:
                await upstream.writer.drain()
            try:
                response = await self._response_head(upstream, pump, request.method)
            except asyncio.IncompleteReadError:
                if not upstream.reused or has_body:
                    raise
                upstream.writer.transport.abort()  # an idle connection the agent had closed
                upstream = await pool.acquire(fresh=True)
                upstream.writer.write(head)
                await upstream.writer.drain()
                response = await self._response_head(upstream, None, request.method)
            stream.answered = True
            self._conn.send_headers(stream.stream_id, h2_response_headers(response),
                                    end_stream=not response.has_body)
            self._flush()
            if response.has_body:
                async for piece in read_body(upstream.reader, response):
                    await self._send(stream.stream_id, piece)
                self._conn.end_stream(stream.stream_id)
                self._flush()
            body_sent = pump is None or (pump.done() and not pump.cancelled()
                                         and pump.exception() is None and pump.result())
            if not stream.ended:  # answered before the client finished its body
                self._conn.reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
                self._flush()
            return upstream, bool(response.keep_alive and body_sent)
        except BaseException:
            upstream.writer.transport.abort()
            raise
        finally:
            if pump is not None:
                pump.cancel()  # nothing when it finished; its failure is retrieved here
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump

    async def _response_head(self, upstream: Upstream, pump: asyncio.Task[bool] | None,
                             method: str) -> ResponseHead:
        """The response head, or the pump's failure (a body too large) if it came first."""
        reading = asyncio.ensure_future(read_response_head(upstream.reader, method))
        if pump is None:
            return await reading
        try:
            await asyncio.wait({reading, pump}, return_when=asyncio.FIRST_COMPLETED)
            if not reading.done() and pump.done():
                failure = pump.exception()
                if failure is not None:
                    raise failure
            return await reading
        finally:
            if not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await reading

    async def _pump(self, stream: _Stream, upstream: Upstream, chunked: bool) -> bool:
        """The request body to the agent, each piece acknowledged once written; True when
        all of it was sent."""
        writer = upstream.writer
        while True:
            item = await stream.body.get()
            if isinstance(item, _BodyTooLarge):
                raise item
            if item is None:
                if chunked:
                    writer.write(_LAST_CHUNK)
                await writer.drain()
                return True
            data, flow = item
            if data:
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked
                             else data)
                await writer.drain()
            self._ack(stream.stream_id, flow)

    def _release_body(self, stream: _Stream) -> None:
        """Acknowledge what the stream had queued and will not send (the connection's
        window must not shrink for good)."""
        while not stream.body.empty():
            item = stream.body.get_nowait()
            if isinstance(item, tuple):
                self._ack(stream.stream_id, item[1])

    async def _send(self, stream_id: int, data: bytes) -> None:
        """DATA within the stream's and the connection's send windows, waiting for the
        client's WINDOW_UPDATE when they are closed."""
        view = memoryview(data)
        while view:
            if self._closed:
                raise ConnectionResetError("the HTTP/2 connection ended")
            window = min(self._conn.local_flow_control_window(stream_id),
                         self._conn.max_outbound_frame_size)
            if window <= 0:
                await self._wait_window()
                continue
            self._conn.send_data(stream_id, bytes(view[:window]))
            self._flush()
            view = view[window:]
            await self._writer.drain()

    async def _refuse(self, stream: _Stream, err: StreamRefused) -> None:
        if not err.audited:
            await self._audited(f"{err} (HTTP/2 stream {stream.stream_id})")
        if stream.answered or self._closed:
            self._reset(stream.stream_id, ErrorCodes.REFUSED_STREAM)
            return
        body = status_body(err.status, str(err))
        with contextlib.suppress(h2.exceptions.ProtocolError, ConnectionResetError):
            self._conn.send_headers(stream.stream_id, [
                (":status", str(err.status)), ("content-type", "application/json"),
                ("content-length", str(len(body)))])
            stream.answered = True
            await self._send(stream.stream_id, body)
            self._conn.end_stream(stream.stream_id)
            if not stream.ended:
                self._conn.reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
            self._flush()

    async def _broken(self, stream: _Stream, reason: str) -> None:
        """The agent's side failed: 502 before the response began, else a reset."""
        log.info("kube front h2 %s: stream %d: %s", self._name, stream.stream_id, reason)
        if stream.answered:
            self._reset(stream.stream_id, ErrorCodes.INTERNAL_ERROR)
        else:
            await self._refuse(stream, StreamRefused(502, f"Limen: {reason}", audited=True))

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        if self._closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self._conn.reset_stream(stream_id, code)
        self._flush()
