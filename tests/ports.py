"""Ports for servers that the tests start on 127.0.0.1 at an address chosen beforehand (a
config names it before the server runs, a restarted server must come back on it): chosen at
random below the kernel's ephemeral port range and checked free. Used by the integration and
web tests, ``dbservers`` and the benchmarks.

A port taken with ``bind(("127.0.0.1", 0))`` and released lies in the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 on Debian): the kernel hands it out
again as the source port of any outgoing connection, and with three test workers making
loopback connections all the time, one such connection took a proxy's web port between the
choice and ``limen start``'s bind ("Address already in use"). Below that range a port is
taken only by an explicit bind: another test's choice, drawn from about 22,000.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_port", "free_ports"]

LOWEST = 10000
_RANDOM = random.SystemRandom()  # not the seeded module state: every worker draws its own


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports of 127.0.0.1, each free when chosen."""
    highest = max(_ephemeral_start(), LOWEST + 1000)
    chosen: list[int] = []
    while len(chosen) < count:
        port = _RANDOM.randrange(LOWEST, highest)
        if port in chosen:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def free_port() -> int:
    """One port of 127.0.0.1, free when chosen."""
    return free_ports(1)[0]
