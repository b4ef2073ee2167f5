"""``limen start``'s event loop: uvloop by default, asyncio when asked, nothing else accepted;
and the transports of both loops serve Limen's stream protocols."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop

from limen.config import load_settings
from limen.errors import BadParameter
from limen.net.event_loop import run, stream_transport


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_is_the_default_and_asyncio_can_be_chosen(tmp_path: Path) -> None:
    assert load_settings(env={}).event_loop == "uvloop"
    assert load_settings(env={"LIMEN_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    config = tmp_path / "limen.yaml"
    config.write_text("event_loop: asyncio\n")
    assert load_settings(config, env={}).event_loop == "asyncio"


def test_an_unknown_event_loop_is_refused_with_the_choices(tmp_path: Path) -> None:
    config = tmp_path / "limen.yaml"
    config.write_text("event_loop: trio\n")
    with pytest.raises(BadParameter, match="event_loop"):
        load_settings(config, env={})


def test_run_uses_the_loop_it_is_asked_for() -> None:
    assert issubclass(run(_loop_type(), "uvloop"), uvloop.Loop)
    assert not issubclass(run(_loop_type(), "asyncio"), uvloop.Loop)


async def _echo_through_stream_protocol() -> bytes:
    """A server whose protocol takes its transport through ``stream_transport`` (as the
    proxy's routers do) echoes what a client sends."""

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = stream_transport(transport)

        def data_received(self, data: bytes) -> None:
            self.transport.write(data.upper())
            self.transport.close()

    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        await writer.wait_closed()
        return answer
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_stream_protocols_work_on_both_loops(kind: str) -> None:
    assert run(_echo_through_stream_protocol(), kind) == b"PING"
