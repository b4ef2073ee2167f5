"""Errors crossing the API: a relayed ``validation_failed`` keeps its message whole
(``limen.errors.from_code``), a timeout names itself (``limen.net.http.ApiClient``), and a
client that leaves mid-request is not an internal error (``error_middleware``)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from aiohttp import web

from limen.errors import ConnectionProblem, ValidationFailed, from_code
from limen.net.http import ApiClient, Handler, error_middleware, json_body


def test_a_relayed_validation_failure_keeps_its_lines() -> None:
    err = from_code("validation_failed", "roles/a.yaml: bad\nroles/b.yaml: worse")
    assert isinstance(err, ValidationFailed)
    assert str(err) == "roles/a.yaml: bad\nroles/b.yaml: worse"
    assert err.errors == []


async def test_a_timeout_is_named_in_the_message() -> None:
    with socket.socket() as listener:  # accepts (backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = ApiClient(f"http://127.0.0.1:{port}", False, timeout=0.3)
        try:
            with pytest.raises(ConnectionProblem, match=r"TimeoutError$"):
                await client.call("GET", "/v1/ping")
        finally:
            await client.close()


async def test_a_client_leaving_mid_request_is_not_an_internal_error(
        caplog: pytest.LogCaptureFixture) -> None:
    reading, answered = asyncio.Event(), asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        reading.set()
        await json_body(request)
        return web.json_response({})

    @web.middleware
    async def done(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        finally:
            answered.set()

    app = web.Application(middlewares=[done, error_middleware])
    app.add_routes([web.post("/v1/echo", handler)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.create_server(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    caplog.set_level(logging.ERROR, logger="limen.net.http")
    try:
        _reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        writer.write(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 1000\r\n\r\n{\"a\": ")
        await writer.drain()
        await asyncio.wait_for(reading.wait(), 5)
        writer.transport.abort()  # gone, 994 bytes short
        await asyncio.wait_for(answered.wait(), 5)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await runner.cleanup()
