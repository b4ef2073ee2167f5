"""The SPDY/3.1 codec of the kube agent (``limen.agents.kube.spdy``) and the reading of an exec
session over SPDY for its recording (``limen.agents.kube.exec_streams``): every frame type
round trips, the emulator's own SPDY framer (tests/k8s_emulator/spdy.py, what kubectl's
port-forward is served with) is the peer in both directions, any split of the bytes gives the
same frames, arbitrary bytes raise nothing but SpdyError (hypothesis), a decompression bomb in
a header block and an oversized control frame stop the decoder at their bound while a 12 MiB
DATA frame comes in pieces, the exec streams give the output and resizes a recording keeps
(stdin never), and the recorder writes them and reports a bomb once (``on_failure``)."""

from __future__ import annotations

import contextlib
import functools
import json
import struct
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k8s_emulator import spdy as emulator_spdy
from limen.agents.kube.exec_recording import ExecRecorder
from limen.agents.kube.exec_streams import (
    ChannelReader,
    Output,
    Resize,
    SpdyStreamReader,
    reader_for,
)
from limen.agents.kube.spdy import (
    DICTIONARY,
    MAX_HEADER_BLOCK,
    DataFrame,
    Frame,
    GoAway,
    Headers,
    Ping,
    RstStream,
    Settings,
    SpdyDecoder,
    SpdyEncoder,
    SpdyError,
    SynReply,
    SynStream,
    WindowUpdate,
)
from limen.recording import read_cast

FRAMES: list[Frame] = [
    Settings(((0, 7, 65536), (1, 4, 100)), clear=True),
    SynStream(1, {"streamtype": ("error",)}, priority=0),
    SynStream(3, {"streamtype": ("stdin",), "x-two": ("a", "b")}, fin=False,
              unidirectional=True, associated_id=1, priority=7),
    SynReply(1, {}),
    SynReply(3, {"status": ("200 OK",)}, fin=True),
    Headers(3, {"x-late": ("yes",)}),
    DataFrame(3, b"hello"),
    DataFrame(3, b"", fin=True),
    WindowUpdate(3, 0x7FFFFFFF),
    Ping(0xFFFFFFFF),
    RstStream(5, 3),
    GoAway(5, 1),
]


def _encode(frames: list[Frame]) -> bytes:
    encoder = SpdyEncoder()
    return b"".join(encoder.encode(f) for f in frames)


def test_every_frame_type_round_trips() -> None:
    assert SpdyDecoder().feed(_encode(FRAMES)) == FRAMES


def test_the_emulators_framer_is_the_peer_both_ways() -> None:
    # client to server: our frames read by the emulator's server half
    server = emulator_spdy.SpdyFramer()
    got = server.feed(_encode([SynStream(1, {"streamtype": ("stdout",)}),
                               DataFrame(1, b"typed"), Ping(7)]))
    assert got == [emulator_spdy.SynStream(1, {"streamtype": ["stdout"]}, False),
                   emulator_spdy.DataFrame(1, b"typed", False), emulator_spdy.Ping(7)]
    # server to client: the emulator's frames read by ours, header blocks in one zlib stream
    wire = (server.syn_reply(1, {"X-A": "1"}) + server.syn_reply(3, {"X-B": "2"})
            + server.data(1, b"out", fin=True) + server.ping(9) + server.rst_stream(3, 5)
            + server.goaway(3))
    assert SpdyDecoder().feed(wire) == [
        SynReply(1, {"x-a": ("1",)}), SynReply(3, {"x-b": ("2",)}), DataFrame(1, b"out", True),
        Ping(9), RstStream(3, 5), GoAway(3, 0)]


@given(st.data())
def test_any_split_gives_the_same_frames(data: st.DataObject) -> None:
    wire = _encode(FRAMES)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    decoder, out, last = SpdyDecoder(), [], 0
    for position in [*cuts, len(wire)]:
        out += decoder.feed(wire[last:position])
        last = position
    assert out == FRAMES


@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_the_codecs_error(data: bytes) -> None:
    decoder = SpdyDecoder()
    try:
        decoder.feed(data)
    except SpdyError:
        with pytest.raises(SpdyError):
            decoder.feed(b"")  # refused for good


@given(st.binary(max_size=300), st.integers(0, 0xFFFFFF), st.integers(1, 9))
def test_arbitrary_control_payloads_raise_only_the_codecs_error(
        payload: bytes, flags_length: int, kind: int) -> None:
    """Well-framed control frames of every type whose payload is anything."""
    prefix = _encode([SynStream(1, {"streamtype": ("stdout",)})])
    frame = struct.pack(">HHI", 0x8003, kind, (flags_length & 0xFF000000) | len(payload))
    with contextlib.suppress(SpdyError):
        SpdyDecoder().feed(prefix + frame + payload)


def _syn_stream_with_block(block: bytes) -> bytes:
    payload = struct.pack(">IIBB", 1, 0, 0, 0) + block
    return struct.pack(">HHI", 0x8003, 1, len(payload)) + payload


def test_a_decompression_bomb_stops_at_the_bound() -> None:
    deflate = zlib.compressobj(9, zdict=DICTIONARY)
    bomb = deflate.compress(struct.pack(">I", 1) + b"\x00" * (64 << 20)) + \
        deflate.flush(zlib.Z_SYNC_FLUSH)
    assert len(bomb) < MAX_HEADER_BLOCK  # small on the wire, 64 MiB inflated
    decoder = SpdyDecoder()
    started = time.monotonic()
    with pytest.raises(SpdyError, match="inflates to more than"):
        decoder.feed(_encode([Ping(1)]) + _syn_stream_with_block(bomb))
    assert time.monotonic() - started < 1.0
    assert decoder.failed is not None
    with pytest.raises(SpdyError) as err:
        SpdyDecoder().feed(_encode([Ping(1)]) + _syn_stream_with_block(bomb))
    assert err.value.decoded == [Ping(1)]  # what came before is still given


def test_an_oversized_control_frame_is_refused_before_its_bytes_arrive() -> None:
    decoder = SpdyDecoder(max_frame=1000)
    with pytest.raises(SpdyError, match="over the limit"):
        decoder.feed(struct.pack(">HHI", 0x8003, 1, 1001))
    with pytest.raises(SpdyError, match="already refused"):
        decoder.feed(_encode([Ping(1)]))


def test_a_long_data_frame_is_given_in_pieces_as_it_arrives() -> None:
    """SPDY allows DATA frames up to 16 MiB: never refused, never buffered whole."""
    payload = bytes(range(256)) * (12 << 12)  # 12 MiB
    wire = _encode([DataFrame(5, payload, fin=True), Ping(3)])
    decoder, frames = SpdyDecoder(max_frame=1000), []
    for offset in range(0, len(wire), 100_000):
        got = decoder.feed(wire[offset:offset + 100_000])
        assert all(len(f.data) <= 100_000 for f in got if isinstance(f, DataFrame))
        frames += got
    *pieces, last = frames
    assert last == Ping(3)
    assert {f.stream_id for f in pieces} == {5}
    assert b"".join(f.data for f in pieces) == payload
    assert [f.fin for f in pieces] == [False] * (len(pieces) - 1) + [True]


@pytest.mark.parametrize(("wire", "message"), [
    pytest.param(struct.pack(">HHI", 0x8002, 6, 4) + b"\0\0\0\1", "version 2 is not 3",
                 id="version"),
    pytest.param(struct.pack(">HHI", 0x8003, 6, 3) + b"\0\0\0", "type 6 with 3 bytes",
                 id="short-ping"),
    pytest.param(struct.pack(">HHI", 0x8003, 4, 8) + struct.pack(">II", 2, 0), "SETTINGS",
                 id="settings-count"),
    pytest.param(_syn_stream_with_block(b"not zlib at all"), "does not inflate",
                 id="not-zlib"),
])
def test_malformed_frames(wire: bytes, message: str) -> None:
    with pytest.raises(SpdyError, match=message):
        SpdyDecoder().feed(wire)


def test_unknown_control_frames_are_skipped() -> None:
    unknown = struct.pack(">HHI", 0x8003, 0x42, 3) + b"abc"
    assert SpdyDecoder().feed(unknown + _encode([Ping(2)])) == [Ping(2)]


def _exec_session() -> tuple[bytes, bytes]:
    """What kubectl exec -it and the API server send each other over SPDY (v4)."""
    up, down, _bomb = _exec_session_and_bomb()
    return up, down


@functools.cache
def _exec_session_and_bomb() -> tuple[bytes, bytes, bytes]:
    """:func:`_exec_session`, and a SYN_STREAM the client could send next whose header block
    (in the client's zlib stream) inflates to 8 MiB."""
    client = SpdyEncoder()
    server = SpdyEncoder()
    up = b"".join(client.encode(f) for f in [
        SynStream(1, {"streamtype": ("error",)}),
        SynStream(3, {"streamtype": ("stdin",)}),
        SynStream(5, {"streamtype": ("stdout",)}),
        SynStream(7, {"streamtype": ("resize",)}),
        DataFrame(7, b'{"Width":100,"Height":30}\n{"Width":1'),
        DataFrame(3, b"secret typed\r"),
        DataFrame(7, b'20,"Height":40}\n'),
        Ping(1),
    ])
    down = b"".join(server.encode(f) for f in [
        SynReply(1), SynReply(3), SynReply(5), SynReply(7), Ping(1),
        DataFrame(5, b"$ "), DataFrame(5, b"42ok\r\n"),
        DataFrame(1, b'{"status":"Success"}', fin=True), DataFrame(5, b"", fin=True),
    ])
    bomb = client.encode(SynStream(9, {"x-bomb": ("a" * (8 << 20),)}))
    assert len(bomb) < 64 << 10
    return up, down, bomb


def test_the_exec_streams_give_output_and_resizes_never_stdin() -> None:
    up, down = _exec_session()
    reader = reader_for("SPDY/3.1")
    assert isinstance(reader, SpdyStreamReader)
    assert reader.from_client(up) == [Resize(100, 30), Resize(120, 40)]
    assert reader.from_server(down) == [Output(b"$ "), Output(b"42ok\r\n")]
    assert reader.failure is None
    assert isinstance(reader_for("v5.channel.k8s.io"), ChannelReader)
    assert reader_for("SPDY/3.1+portforward.k8s.io") is None


@given(st.data())
def test_the_exec_streams_read_any_split_alike(data: st.DataObject) -> None:
    up, down = _exec_session()
    reader, events = SpdyStreamReader(), []
    for wire, side in ((up, reader.from_client), (down, reader.from_server)):
        cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
        last = 0
        for position in [*cuts, len(wire)]:
            events += side(wire[last:position])
            last = position
    assert events == [Resize(100, 30), Resize(120, 40), Output(b"$ "), Output(b"42ok\r\n")]


def test_unreadable_bytes_stop_the_reading_not_the_caller() -> None:
    up, _down = _exec_session()
    reader = SpdyStreamReader()
    reader.from_client(up)
    bad = SpdyEncoder().encode(DataFrame(5, b"before")) + struct.pack(">HHI", 0x8002, 6, 0)
    assert reader.from_server(bad) == [Output(b"before")]
    assert reader.failure is not None
    assert "version 2" in reader.failure
    assert reader.from_server(SpdyEncoder().encode(DataFrame(5, b"after"))) == []
    assert reader.from_client(json.dumps({"Width": 1, "Height": 1}).encode()) == []


@given(st.binary(max_size=400), st.binary(max_size=400))
def test_the_exec_stream_reader_never_raises(up: bytes, down: bytes) -> None:
    reader = SpdyStreamReader()
    reader.from_client(up)
    reader.from_server(down)


async def test_the_recorder_writes_a_spdy_session_and_reports_a_bomb_once(
        tmp_path: Path) -> None:
    """The recorder behind the kube agent's taps: output and resizes land in the cast; a
    decompression bomb from the client stops the recording, tells ``on_failure`` once (the
    agent then ends a session that must be recorded) and raises nothing into the relay."""
    recorder = await ExecRecorder.open(tmp_path, {"command": "sh"})
    failures: list[str] = []
    recorder.on_failure = failures.append
    taps = recorder.taps("SPDY/3.1")
    assert taps is not None
    to_server, to_client = taps
    up, down, bomb = _exec_session_and_bomb()
    to_server(up)
    to_client(down)
    to_server(bomb)
    to_server(SpdyEncoder().encode(DataFrame(7, b'{"Width":1,"Height":1}\n')))
    to_client(SpdyEncoder().encode(DataFrame(5, b"unrecorded")))
    assert len(failures) == 1
    assert recorder.failure == failures[0]
    assert "inflates to more than" in failures[0]
    path = await recorder.task.finish()
    cast = read_cast(path)
    assert [e.data for e in cast.events if e.code == "o"] == ["$ ", "42ok\r\n"]
    assert [e.data for e in cast.events if e.code == "r"] == ["100x30", "120x40"]
    assert ExecRecorder.accepts("SPDY/3.1")
    assert not ExecRecorder.accepts("SPDY/3.1+portforward.k8s.io")
