"""A tiny TCP load balancer for end-to-end tests: what a Kubernetes Service or an operator's TCP
balancer is in front of several auth replicas. Each accepted connection goes to the next
backend in turn that accepts a TCP connection (a dead replica refuses at once and is skipped);
bytes are then relayed both ways unchanged (TLS passes through, end to end).

Backends are asked for on every connection (a callable), so a replica restarted on a new port
is picked up. Used by ``test_ha_cluster.py`` (proxies reach two auth replicas through it).
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable

__all__ = ["TcpFailover"]

CONNECT_TIMEOUT = 2.0


class TcpFailover:
    """Listens on 127.0.0.1 (a free port); :attr:`address` is ``127.0.0.1:PORT``."""

    def __init__(self, backends: Callable[[], list[str]]) -> None:
        self._backends = backends
        self._turn = itertools.count()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._closed = threading.Event()
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> TcpFailover:
        self._accepting.start()
        return self

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _connect(self) -> socket.socket | None:
        backends = self._backends()
        if not backends:
            return None
        first = next(self._turn)
        for index in range(len(backends)):
            host, port = backends[(first + index) % len(backends)].rsplit(":", 1)
            with contextlib.suppress(OSError):
                upstream = socket.create_connection((host, int(port)), CONNECT_TIMEOUT)
                upstream.settimeout(None)  # the timeout was for connecting: idle is fine
                return upstream
        return None

    def _serve(self, client: socket.socket) -> None:
        upstream = self._connect()
        if upstream is None:
            client.close()
            return
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy ``source`` to ``target`` until either side ends; then close both."""
    try:
        while chunk := source.recv(65536):
            target.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
