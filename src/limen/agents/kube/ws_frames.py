"""WebSocket frames (RFC 6455) read from the bytes of an upgraded exec/attach session: pure
code, bytes in, messages out.

The kube agent relays an upgraded connection byte for byte; to record an interactive session
it also feeds a copy of each direction to a :class:`FrameDecoder`, which yields the complete
data messages (opcode, unmasked payload; fragments joined). Control frames (ping, pong,
close) are skipped. A frame announcing more than :data:`MAX_MESSAGE` bytes, or any other
violation, makes the decoder stop (``failed``): the relay goes on, the recording stops.
Called by :mod:`limen.agents.kube.exec_recording`.
"""

from __future__ import annotations

__all__ = ["MAX_MESSAGE", "FrameDecoder"]

MAX_MESSAGE = 16 << 20
_CONTINUATION, _TEXT, _BINARY = 0x0, 0x1, 0x2


class FrameDecoder:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._opcode: int | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self.failed = False

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The data messages completed by ``data`` (none once the decoder has failed)."""
        if self.failed:
            return []
        self._buffer += data
        out: list[tuple[int, bytes]] = []
        while True:
            frame = self._frame()
            if frame is None:
                return out
            fin, opcode, payload = frame
            if opcode >= 0x8:  # control frames stand alone
                continue
            if opcode != _CONTINUATION:
                if self._opcode is not None or opcode not in (_TEXT, _BINARY):
                    self.failed = True
                    return out
                self._opcode = opcode
            elif self._opcode is None:
                self.failed = True
                return out
            self._parts.append(payload)
            self._size += len(payload)
            if self._size > MAX_MESSAGE:
                self.failed = True
                return out
            if fin:
                out.append((self._opcode, b"".join(self._parts)))
                self._opcode, self._parts, self._size = None, [], 0

    def _frame(self) -> tuple[bool, int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        fin, opcode = bool(buf[0] & 0x80), buf[0] & 0x0F
        masked, length, offset = bool(buf[1] & 0x80), buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, offset = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, offset = int.from_bytes(buf[2:10], "big"), 10
        if length > MAX_MESSAGE:
            self.failed = True
            self._buffer.clear()
            return None
        mask = b""
        if masked:
            if len(buf) < offset + 4:
                return None
            mask, offset = bytes(buf[offset:offset + 4]), offset + 4
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset:offset + length])
        del buf[:offset + length]
        if mask and payload:
            size = len(payload)
            key = (mask * (size // 4 + 1))[:size]
            payload = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(
                size, "big")
        return fin, opcode, payload
