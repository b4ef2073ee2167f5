"""What an interactive exec/attach shows on its terminal, read from copies of the relayed
bytes: the output the user saw and the terminal's resizes, for either protocol kubectl speaks.

- :class:`ChannelReader`: the WebSocket channel protocol (``v5.channel.k8s.io`` /
  ``v4.channel.k8s.io``, :mod:`limen.agents.kube.ws_frames`): a message's first byte is its
  channel, 1 stdout and 2 stderr from the server, 4 resize from the client.
- :class:`SpdyStreamReader`: SPDY/3.1 (``Upgrade: SPDY/3.1``, :mod:`limen.agents.kube.spdy`):
  the client opens one stream per role, named by the ``streamtype`` header of its SYN_STREAM
  (``error``, ``stdin``, ``stdout``, ``stderr``, ``resize``); DATA on the stdout and stderr
  streams is output, the resize stream carries one JSON object per resize.

Both give :class:`Output` and :class:`Resize` events; stdin is never read. A reader that meets
bytes it cannot read (a malformed or oversized frame, a header block that inflates too far)
stops for good and says why in ``failure``; the relay is not concerned. Called by
:mod:`limen.agents.kube.exec_recording`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from limen.agents.kube.spdy import DataFrame, RstStream, SpdyDecoder, SpdyError, SynStream
from limen.agents.kube.ws_frames import FrameDecoder

__all__ = [
    "CHANNEL_PROTOCOLS",
    "SPDY_PROTOCOL",
    "ChannelReader",
    "Event",
    "Output",
    "Resize",
    "SpdyStreamReader",
    "StreamReader",
    "reader_for",
]

CHANNEL_PROTOCOLS = frozenset({"v5.channel.k8s.io", "v4.channel.k8s.io"})
SPDY_PROTOCOL = "spdy/3.1"
"""The ``Upgrade`` value of an exec over SPDY (compared in lower case)."""
MAX_RESIZE_LINE = 4096
"""The longest resize message kept while its end is awaited."""
_STDOUT, _STDERR, _RESIZE = 1, 2, 4


@dataclass(frozen=True)
class Output:
    data: bytes


@dataclass(frozen=True)
class Resize:
    width: int
    height: int


Event = Output | Resize


class StreamReader(Protocol):
    failure: str | None

    def from_client(self, data: bytes) -> list[Event]: ...

    def from_server(self, data: bytes) -> list[Event]: ...


def reader_for(protocol: str | None) -> StreamReader | None:
    """The reader of a session that negotiated ``protocol`` (None: not readable)."""
    if protocol in CHANNEL_PROTOCOLS:
        return ChannelReader()
    if protocol is not None and protocol.strip().lower() == SPDY_PROTOCOL:
        return SpdyStreamReader()
    return None


def _resize(text: bytes) -> Resize | None:
    try:
        size = json.loads(text)
        return Resize(int(size["Width"]), int(size["Height"]))
    except (ValueError, KeyError, TypeError):
        return None


class ChannelReader:
    """The WebSocket channel protocol (see the module)."""

    def __init__(self) -> None:
        self._client = FrameDecoder()
        self._server = FrameDecoder()
        self.failure: str | None = None

    def from_client(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for _opcode, message in self._client.feed(data):
            if message[:1] == bytes((_RESIZE,)) and (size := _resize(message[1:])):
                events.append(size)
        self._check(self._client)
        return events

    def from_server(self, data: bytes) -> list[Event]:
        events: list[Event] = [
            Output(message[1:]) for _opcode, message in self._server.feed(data)
            if message[:1] in (bytes((_STDOUT,)), bytes((_STDERR,))) and len(message) > 1]
        self._check(self._server)
        return events

    def _check(self, decoder: FrameDecoder) -> None:
        if decoder.failed and self.failure is None:
            self.failure = "a WebSocket frame that cannot be read, or is over the size limit"


class SpdyStreamReader:
    """SPDY/3.1 exec streams (see the module)."""

    def __init__(self) -> None:
        self._client = SpdyDecoder()
        self._server = SpdyDecoder()
        self._outputs: set[int] = set()
        self._resize: int | None = None
        self._resize_text = b""
        self.failure: str | None = None

    def from_client(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        for frame in self._frames(self._client, data):
            if isinstance(frame, SynStream):
                role = frame.header("streamtype")
                if role in ("stdout", "stderr"):
                    self._outputs.add(frame.stream_id)
                elif role == "resize":
                    self._resize, self._resize_text = frame.stream_id, b""
            elif isinstance(frame, DataFrame) and frame.stream_id == self._resize:
                events.extend(self._resizes(frame.data))
            elif isinstance(frame, RstStream):
                self._outputs.discard(frame.stream_id)
        return events

    def from_server(self, data: bytes) -> list[Event]:
        return [Output(frame.data) for frame in self._frames(self._server, data)
                if isinstance(frame, DataFrame) and frame.stream_id in self._outputs
                and frame.data]

    def _frames(self, decoder: SpdyDecoder, data: bytes) -> list[object]:
        if self.failure is not None:
            return []
        try:
            return list(decoder.feed(data))
        except SpdyError as err:
            self.failure = str(err)
            return list(err.decoded)

    def _resizes(self, data: bytes) -> list[Event]:
        """client-go's JSON encoder writes one object per line on the resize stream."""
        self._resize_text += data
        *lines, self._resize_text = self._resize_text.split(b"\n")
        if len(self._resize_text) > MAX_RESIZE_LINE:
            self._resize_text = b""
        return [size for line in lines if line.strip() and (size := _resize(line))]
