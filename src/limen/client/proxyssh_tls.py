"""``lmsh proxy ssh`` over the proxy's web port: OpenSSH's ProxyCommand as ONE TLS connection.

:func:`open_route` connects to the proxy's web address with ALPN ``limen-ssh-proxy`` and the
TLS context it is given (the user's X.509 certificate from ``lmsh login``, the proxy verified
against the cluster CA saved at login and required to be the proxy:
``limen.client.proxyssh_fast_tls`` without importing cryptography, or
``limen.client.profile_tls.profile_context`` with ``limen.ca``'s checks), sends one request
naming the target (:mod:`limen.net.ssh_tls_wire`), reads the one-line answer;
:func:`relay_stdio` then relays raw bytes between stdin/stdout and the socket: OpenSSH's own
session with the node is the only SSH layer. A proxy that does not speak the ALPN (an older
one) makes :func:`open_route` answer ``None``; the caller then falls back to the SSH subsystem
path (:mod:`limen.client.proxyssh`).

Standard library only on the data path (no asyncio, no asyncssh): one thread polling stdin and
the socket (``poll`` accepts pipes, sockets, terminals, ``/dev/null`` and regular files); a
descriptor closed at start is empty input. TLS cannot half-close on the proxy's side
(asyncio's SSL transport closes on the peer's ``close_notify``), so the end of stdin is passed
on once the target has spoken (SSH servers send their banner first): OpenSSH only closes its
end when it is done. Called by ``limen.client.proxyssh_command`` (the ProxyCommand's fast
path) and ``limen.client.proxyssh_full``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import ssl
import sys
from collections.abc import Callable

from limen.errors import AccessDenied, ConnectionProblem
from limen.net.ssh_tls_wire import ALPN_SSH, MAX_ANSWER, SSHRouteRequest, parse_answer

__all__ = ["RouteRefused", "open_route", "relay_stdio", "stdin_fd", "strip_cluster"]

_CHUNK = 256 * 1024
CONNECT_TIMEOUT = 15.0


class RouteRefused(ConnectionProblem):
    """The proxy answered ``ERR <reason>``."""


def strip_cluster(host: str, cluster: str) -> str:
    """``web1.demo`` → ``web1`` for cluster ``demo`` (the ``lmsh config`` host pattern)."""
    suffix = f".{cluster}"
    return host[: -len(suffix)] if host.endswith(suffix) and host != suffix else host


def open_route(host: str, port: int, context: ssl.SSLContext, request: SSHRouteRequest,
               timeout: float = CONNECT_TIMEOUT, *,
               check: Callable[[bytes | None], None] | None = None
               ) -> tuple[ssl.SSLSocket, bytes] | None:
    """The TLS socket after the proxy's ``OK`` and the bytes that followed it; ``None`` when
    the proxy does not serve the ALPN; :class:`RouteRefused` with the proxy's reason.
    ``check``: called with the server's verified certificate before anything is sent
    (:func:`~limen.client.proxyssh_fast_tls.check_proxy_cert`)."""
    context.set_alpn_protocols([ALPN_SSH])
    try:
        raw = socket.create_connection((host, port), timeout)
    except OSError as err:
        raise ConnectionProblem(f"cannot reach the proxy at {host}:{port}: {err}") from err
    try:
        tls = context.wrap_socket(raw, server_hostname=host)
    except ssl.SSLCertVerificationError as err:
        raw.close()
        raise AccessDenied(f"the proxy at {host}:{port} is not trusted: "
                           f"{err.verify_message or err}") from err
    except (OSError, ssl.SSLError) as err:
        raw.close()
        raise ConnectionProblem(f"TLS with the proxy at {host}:{port} failed: {err}") from err
    if check is not None:
        try:
            check(tls.getpeercert(binary_form=True))
        except AccessDenied as err:
            tls.close()
            raise AccessDenied(f"the proxy at {host}:{port} is not trusted: {err}") from None
        except BaseException:
            tls.close()
            raise
    try:
        if tls.selected_alpn_protocol() != ALPN_SSH:
            tls.close()
            return None
        tls.sendall(request.encode())
        answer = bytearray()
        while b"\n" not in answer:
            data = tls.recv(MAX_ANSWER)
            if not data:
                break
            answer += data
            if len(answer) > MAX_ANSWER and b"\n" not in answer:
                break
    except (OSError, ssl.SSLError) as err:
        tls.close()
        raise ConnectionProblem(f"lost the connection to the proxy at {host}:{port}: "
                                f"{err}") from err
    line, sep, rest = bytes(answer).partition(b"\n")
    reason = parse_answer(line) if sep else (
        f"the proxy at {host}:{port} closed the connection without an answer")
    if reason is not None:
        tls.close()
        raise RouteRefused(reason)
    tls.settimeout(None)
    return tls, rest


def stdin_fd() -> int:
    """stdin's descriptor, or -1 when it was closed at start (read it before opening any
    socket, which would take descriptor 0)."""
    if sys.stdin is None:  # Python saw descriptor 0 closed at start
        return -1
    try:
        fd = sys.stdin.fileno()
        os.fstat(fd)
    except (OSError, ValueError):
        return -1
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])


def relay_stdio(tls: ssl.SSLSocket, first: bytes, in_fd: int, out_fd: int = 1) -> None:
    """Relay ``in_fd`` (stdin) to ``tls`` and ``tls`` to ``out_fd`` until the proxy closes
    (or stdout's reader went away); :class:`ConnectionProblem` when the connection breaks
    before the end of stdin."""
    try:
        if first:
            _write_all(out_fd, first)
        _pump(tls, in_fd, out_fd, spoken=bool(first))
    except BrokenPipeError:
        return  # OpenSSH closed our stdout: it is done
    finally:
        tls.close()


def _pump(tls: ssl.SSLSocket, in_fd: int, out_fd: int, *, spoken: bool) -> None:
    tls.setblocking(False)
    sock_fd = tls.fileno()
    poller = select.poll()
    pending = b""
    reading_stdin = in_fd >= 0
    stdin_ended = not reading_stdin
    closed_ours = False
    stdin_polled = False
    while True:
        if stdin_ended and not pending and spoken and not closed_ours:
            closed_ours = True
            try:
                tls.unwrap()  # close_notify; replies keep coming until the proxy closes
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except (OSError, ssl.SSLError):
                return
        want_stdin = reading_stdin and not pending
        if want_stdin != stdin_polled:
            if want_stdin:
                poller.register(in_fd, select.POLLIN)
            else:
                poller.unregister(in_fd)
            stdin_polled = want_stdin
        poller.register(sock_fd, select.POLLIN | (select.POLLOUT if pending else 0))
        for fd, _events in poller.poll():
            if fd == in_fd and want_stdin:
                try:
                    data = os.read(in_fd, _CHUNK)
                except OSError as err:
                    if err.errno == errno.EAGAIN:
                        continue
                    data = b""
                if data:
                    pending = data
                else:
                    reading_stdin, stdin_ended = False, True
        if pending and not closed_ours:
            try:
                sent = tls.send(pending)
                pending = pending[sent:]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
            except (OSError, ssl.SSLError) as err:
                raise ConnectionProblem(f"lost the connection to the proxy: {err}") from err
        while True:
            try:
                data = tls.recv(_CHUNK)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            except ssl.SSLZeroReturnError:
                return
            except (OSError, ssl.SSLError) as err:
                if closed_ours:
                    return
                raise ConnectionProblem(f"lost the connection to the proxy: {err}") from err
            if not data:
                return
            spoken = True
            _write_all(out_fd, data)
