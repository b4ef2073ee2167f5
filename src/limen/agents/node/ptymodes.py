"""PTY setup from an SSH ``pty-req``: terminal modes (RFC 4254 section 8) and window size.

Called by :mod:`limen.agents.node.session_process` on the new PTY before the shell starts, and on
``window-change``. :func:`apply_modes` maps the opcodes the client sent (asyncssh hands them
over as ``{opcode: value}``) onto ``termios`` flags and control characters, as sshd does;
unknown opcodes are ignored.
"""

from __future__ import annotations

import fcntl
import struct
import termios
from collections.abc import Mapping
from typing import Any

__all__ = ["apply_modes", "set_window_size", "updated_attributes"]

# opcode -> termios control character index
_CC: dict[int, str] = {
    1: "VINTR", 2: "VQUIT", 3: "VERASE", 4: "VKILL", 5: "VEOF", 6: "VEOL", 7: "VEOL2",
    8: "VSTART", 9: "VSTOP", 10: "VSUSP", 12: "VREPRINT", 13: "VWERASE", 14: "VLNEXT",
    18: "VDISCARD",
}
# opcode -> (attribute index in tcgetattr's list, flag name)
_IFLAG, _OFLAG, _CFLAG, _LFLAG = 0, 1, 2, 3
_FLAGS: dict[int, tuple[int, str]] = {
    30: (_IFLAG, "IGNPAR"), 31: (_IFLAG, "PARMRK"), 32: (_IFLAG, "INPCK"),
    33: (_IFLAG, "ISTRIP"), 34: (_IFLAG, "INLCR"), 35: (_IFLAG, "IGNCR"),
    36: (_IFLAG, "ICRNL"), 37: (_IFLAG, "IUCLC"), 38: (_IFLAG, "IXON"), 39: (_IFLAG, "IXANY"),
    40: (_IFLAG, "IXOFF"), 41: (_IFLAG, "IMAXBEL"), 42: (_IFLAG, "IUTF8"),
    50: (_LFLAG, "ISIG"), 51: (_LFLAG, "ICANON"), 52: (_LFLAG, "XCASE"), 53: (_LFLAG, "ECHO"),
    54: (_LFLAG, "ECHOE"), 55: (_LFLAG, "ECHOK"), 56: (_LFLAG, "ECHONL"),
    57: (_LFLAG, "NOFLSH"), 58: (_LFLAG, "TOSTOP"), 59: (_LFLAG, "IEXTEN"),
    60: (_LFLAG, "ECHOCTL"), 61: (_LFLAG, "ECHOKE"), 62: (_LFLAG, "PENDIN"),
    70: (_OFLAG, "OPOST"), 71: (_OFLAG, "OLCUC"), 72: (_OFLAG, "ONLCR"),
    73: (_OFLAG, "OCRNL"), 74: (_OFLAG, "ONOCR"), 75: (_OFLAG, "ONLRET"),
    90: (_CFLAG, "CS7"), 91: (_CFLAG, "CS8"), 92: (_CFLAG, "PARENB"), 93: (_CFLAG, "PARODD"),
}
_VDISABLE = 255


def updated_attributes(attrs: list[Any], modes: Mapping[int, int]) -> list[Any]:
    """A copy of ``tcgetattr`` output with ``modes`` applied (pure; used by the tests)."""
    new = list(attrs)
    cc = list(new[6])
    for opcode, value in modes.items():
        if opcode in _CC and hasattr(termios, _CC[opcode]):
            index = getattr(termios, _CC[opcode])
            char = 0 if value == _VDISABLE else value & 0xFF
            cc[index] = bytes([char]) if isinstance(cc[index], bytes) else char
        elif opcode in _FLAGS and hasattr(termios, _FLAGS[opcode][1]):
            slot, name = _FLAGS[opcode]
            flag = getattr(termios, name)
            if opcode in (90, 91):  # character size is a field, not a flag
                if value:
                    new[slot] = (new[slot] & ~termios.CSIZE) | flag
            elif value:
                new[slot] = new[slot] | flag
            else:
                new[slot] = new[slot] & ~flag
    new[6] = cc
    return new


def apply_modes(fd: int, modes: Mapping[int, int]) -> None:
    """Apply the client's terminal modes to the PTY ``fd``."""
    if not modes:
        return
    termios.tcsetattr(fd, termios.TCSANOW, updated_attributes(termios.tcgetattr(fd), modes))


def set_window_size(fd: int, width: int, height: int, pixwidth: int = 0,
                    pixheight: int = 0) -> None:
    """TIOCSWINSZ on the PTY; the kernel sends SIGWINCH to the foreground process group."""
    size = struct.pack("HHHH", min(height, 0xFFFF), min(width, 0xFFFF),
                       min(pixwidth, 0xFFFF), min(pixheight, 0xFFFF))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, size)
