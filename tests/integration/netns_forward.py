"""A server of this machine reachable from inside a pod network namespace, for the
kubelet-style tests: a TCP port on the namespace's loopback that forwards every connection to
a Unix socket (the test PostgreSQL's, where its ``local ... trust`` line admits the test role)
or to a TCP address of this machine (the Kubernetes API emulator).

::

    pod (netns) ── pg.db.svc:5432 ──▶ NetnsForward ──▶ /tmp/limen-pg-XXXX/.s.PGSQL.<port>
    pod (netns) ── 127.0.0.1:6443 ──▶ NetnsForward ──▶ ("127.0.0.1", <the emulator's port>)

``cut()`` drops every forwarded connection and refuses new ones (the database becomes
unreachable for that namespace only, the server itself keeps running for the other tests of
the session); ``restore()`` listens again. Used by ``test_operator_pods_ha.py`` and
``test_operator_kube_agent_pods.py``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import threading

__all__ = ["NetnsForward"]

_CLONE_NEWNET = 0x40000000
_CHUNK = 65536


def _listen_in(netns: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port`` inside the network namespace ``netns`` (made
    by a thread that entered it; the socket stays there)."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_listen() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns, os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                failed.append(OSError(ctypes.get_errno(), "setns"))
                return
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(64)
            made.append(sock)
        except OSError as err:
            failed.append(err)
        finally:
            os.close(fd)

    thread = threading.Thread(target=enter_and_listen)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


class NetnsForward:
    """127.0.0.1:``port`` in ``netns`` forwarded to the Unix socket ``target`` (a path) or
    the TCP address ``target`` (host, port)."""

    def __init__(self, netns: str, port: int, target: str | tuple[str, int]) -> None:
        self.netns = netns
        self.port = port
        self.target = target
        self.accepted = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        """Listen (again)."""
        listener = _listen_in(self.netns, self.port)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and end the forwarded ones."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            listener.close()
        with self._lock:
            live, self._open = self._open, set()
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.cut()

    def __enter__(self) -> NetnsForward:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
            upstream = socket.socket(family, socket.SOCK_STREAM)
            try:
                upstream.connect(self.target)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self.accepted += 1
                self._open.update((client, upstream))
            threading.Thread(target=self._serve, args=(client, upstream), daemon=True).start()

    def _serve(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions until each side is done; then both sockets are closed."""
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        with self._lock:
            self._open.discard(client)
            self._open.discard(upstream)
        client.close()
        upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
