"""Per-stream routing of the kube front's HTTP/2 server (``limen.proxy.kube.kube_h2`` with a
``route``): streams of one connection naming two routes each reach their own, tunnel
connections are kept and reused per route, a stream naming no valid route is a 400 on that
stream (audited) and the others go on, and a stream naming one route more than
:attr:`H2Limits.max_routes` is refused (400, audited). The ``h2`` library is the client over
real TCP; a small HTTP/1.1 server stands in for the kube agent and echoes the target."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import h2.config
import h2.connection
import h2.events

from limen.errors import BadParameter
from limen.proxy.kube.kube_h2 import H2Limits, H2Session
from limen.proxy.kube.upstream_pool import Dial


async def _agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            body = json.dumps({"target": head.split(" ")[1]}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _front(limits: H2Limits) -> AsyncIterator[tuple[int, Counter[str], list[str]]]:
    agent = await asyncio.start_server(_agent, "127.0.0.1", 0)
    agent_port = int(agent.sockets[0].getsockname()[1])
    dials: Counter[str] = Counter()
    audited: list[str] = []
    tasks: set[asyncio.Task[Any]] = set()

    def route(target: str) -> tuple[str, Dial]:
        key = target.split("/")[1]
        if key not in ("a", "b", "c"):
            raise BadParameter(f"the path names no route: {target}")

        async def dial() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            dials[key] += 1
            return await asyncio.open_connection("127.0.0.1", agent_port)
        return key, dial

    async def unrouted() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        raise AssertionError("every stream is routed")

    async def audit(reason: str) -> None:
        audited.append(reason)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await H2Session(reader, writer, unrouted, audit, limits=limits,
                            route=route).serve()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), dials, audited
    finally:
        server.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        agent.close()
        await agent.wait_closed()


async def _get(port: int, rounds: list[dict[int, str]]
               ) -> list[dict[int, tuple[int, dict[str, Any]]]]:
    """Each round's streams (id: path) sent at once; their statuses and JSON bodies."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding=None))
    conn.initiate_connection()
    answers = []
    try:
        for paths in rounds:
            statuses: dict[int, int] = {}
            bodies: dict[int, bytes] = dict.fromkeys(paths, b"")
            ended: set[int] = set()
            for stream_id, path in paths.items():
                conn.send_headers(stream_id, [(":method", "GET"), (":scheme", "https"),
                                              (":authority", "k"), (":path", path)],
                                  end_stream=True)
            writer.write(conn.data_to_send())
            async with asyncio.timeout(10):
                while ended != set(paths):
                    data = await reader.read(65536)
                    assert data, "the connection ended"
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.ResponseReceived):
                            statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                        elif isinstance(event, h2.events.DataReceived):
                            bodies[event.stream_id] += event.data
                            conn.acknowledge_received_data(event.flow_controlled_length,
                                                           event.stream_id)
                        elif isinstance(event, h2.events.StreamEnded):
                            ended.add(event.stream_id)
                    writer.write(conn.data_to_send())
            answers.append({i: (statuses[i], json.loads(bodies[i])) for i in paths})
    finally:
        writer.close()
        await writer.wait_closed()
    return answers


async def test_streams_are_routed_each_and_connections_kept_per_route() -> None:
    async with _front(H2Limits()) as (port, dials, audited):
        first, second = await _get(port, [{1: "/a/x", 3: "/b/y", 5: "/nowhere"},
                                          {7: "/a/z", 9: "/b/w"}])
    assert first[1] == (200, {"target": "/a/x"})
    assert first[3] == (200, {"target": "/b/y"})
    status, body = first[5]
    assert (status, body["reason"]) == (400, "BadRequest")
    assert "names no route" in body["message"]
    assert [s for s, _ in second.values()] == [200, 200]
    assert dials == {"a": 1, "b": 1}  # the second round reused them
    assert len(audited) == 1
    assert "names no route" in audited[0]


async def test_a_route_more_than_the_limit_is_refused() -> None:
    async with _front(H2Limits(max_routes=2)) as (port, dials, audited):
        [answers] = await _get(port, [{1: "/a/x", 3: "/b/y"}])
        [more] = await _get(port, [{1: "/a/x", 3: "/b/y", 5: "/c/z"}])
    assert [s for s, _ in answers.values()] == [200, 200]
    assert more[5][0] == 400
    assert "more than 2 kube clusters" in more[5][1]["message"]
    assert [more[1][0], more[3][0]] == [200, 200]
    assert "c" not in dials
    assert any("more than 2 kube clusters" in reason for reason in audited)
