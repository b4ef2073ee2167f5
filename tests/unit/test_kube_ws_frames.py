"""WebSocket frames read from a copy of an upgraded exec session (``limen.agents.kube.
ws_frames``) and the recorder's channel protocol (``exec_recording``): masked and unmasked
frames, extended lengths, fragments joined, control frames skipped, any split of the bytes
gives the same messages (hypothesis), and a frame announcing too much stops the decoder."""

from __future__ import annotations

import os
import struct

from hypothesis import given
from hypothesis import strategies as st

from limen.agents.kube.ws_frames import MAX_MESSAGE, FrameDecoder


def frame(payload: bytes, opcode: int = 2, *, fin: bool = True, mask: bytes = b"") -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes((first, (0x80 if mask else 0) | size))
    elif size < 1 << 16:
        head = bytes((first, (0x80 if mask else 0) | 126)) + struct.pack(">H", size)
    else:
        head = bytes((first, (0x80 if mask else 0) | 127)) + struct.pack(">Q", size)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if mask else payload
    return head + mask + body


def test_messages() -> None:
    big = os.urandom(70_000)
    data = (frame(b"\x01hello") + frame(b"\x04{}", mask=b"abcd") + frame(b"", opcode=9)
            + frame(b"\x01par", fin=False) + frame(b"ts", opcode=0) + frame(big))
    assert FrameDecoder().feed(data) == [(2, b"\x01hello"), (2, b"\x04{}"), (2, b"\x01parts"),
                                         (2, big)]


@given(st.lists(st.binary(max_size=300), max_size=5), st.data())
def test_any_split_gives_the_same_messages(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(p, mask=b"\x01\x02\x03\x04") for p in payloads)
    cut = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder, out, last = FrameDecoder(), [], 0
    for position in [*cut, len(stream)]:
        out += decoder.feed(stream[last:position])
        last = position
    assert [m for _op, m in out] == payloads


def test_too_large_or_malformed_stops_the_decoder() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(bytes((0x82, 127)) + struct.pack(">Q", MAX_MESSAGE + 1)) == []
    assert decoder.failed
    assert decoder.feed(frame(b"after")) == []
    orphan = FrameDecoder()
    orphan.feed(frame(b"x", opcode=0))
    assert orphan.failed


@given(st.binary(max_size=400))
def test_fuzz(data: bytes) -> None:
    FrameDecoder().feed(data)  # never raises: a violation only stops the decoder
