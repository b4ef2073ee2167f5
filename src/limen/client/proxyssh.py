"""``lmsh proxy ssh`` for a proxy without the TLS route (``limen.client.proxyssh_tls``, tried
first): the ProxyCommand that carries OpenSSH to a node through Limen's SSH front.

It opens an SSH connection to the proxy's SSH front with the user's key and certificate
(verifying the proxy against the host CA in ``~/.limen/known_hosts``) as the login OpenSSH will
use on the node (``%r``: the proxy checks it against the roles before dialling), requests the
subsystem ``proxy:<host>:<port>@<cluster>``, and relays the subsystem's bytes to stdin/stdout,
where OpenSSH speaks its own end-to-end session with the node.

When the proxy cannot connect the target it answers with one line on the channel's stderr and
a non-zero exit status; :func:`run_proxy_ssh` prints that line as ``lmsh: <reason>`` and
returns the status, so the user reads the reason before OpenSSH's own closing message.

stdin may be anything OpenSSH or a shell hands over: a pipe or a socket is read by the event
loop; a terminal, ``/dev/null`` or a regular file (which epoll cannot watch) by a reader
thread; a descriptor closed at start is empty input. Called by ``limen.cli.lmsh``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import stat
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import asyncssh

from limen.client.proxyssh_tls import strip_cluster
from limen.errors import AccessDenied, ConnectionProblem
from limen.net.address import parse_address
from limen.net.sshalgs import client_algorithms

__all__ = ["one_line", "open_stdin", "proxy_subsystem", "run_proxy_ssh", "strip_cluster"]

_CHUNK = 256 * 1024
_REASON_WAIT = 5.0
"""Seconds to wait for the rest of the proxy's stderr once the data stream ended."""


def proxy_subsystem(host: str, port: int, cluster: str) -> str:
    return f"proxy:{host}:{port}@{cluster}"


def one_line(text: str, limit: int = 400) -> str:
    """``text`` as one printable line (it comes from the network: no control characters)."""
    flat = " ".join(text.split())
    return "".join(c for c in flat if c.isprintable())[:limit]


async def open_stdin() -> Callable[[], Awaitable[bytes]]:
    """A ``read()`` coroutine over stdin returning ``b""`` at the end (see the module doc)."""
    loop = asyncio.get_running_loop()
    stdin = sys.stdin
    try:
        fd = stdin.fileno() if stdin is not None else -1
        mode = os.fstat(fd).st_mode if fd >= 0 else 0
    except (OSError, ValueError):
        fd, mode = -1, 0
    if fd < 0:
        async def nothing() -> bytes:
            return b""
        return nothing
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        reader = asyncio.StreamReader(limit=_CHUNK)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     stdin.buffer)

        async def from_pipe() -> bytes:
            return await reader.read(_CHUNK)
        return from_pipe
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=4)
    threading.Thread(target=_pump, args=(fd, queue, loop), name="lmsh stdin",
                     daemon=True).start()
    return queue.get


def _pump(fd: int, queue: asyncio.Queue[bytes], loop: asyncio.AbstractEventLoop) -> None:
    """Reader thread: blocking reads of ``fd`` into ``queue`` (bounded), ``b""`` at the end.
    A daemon thread, so a read blocked on a terminal never holds up the exit."""
    while True:
        try:
            data = os.read(fd, _CHUNK)
        except OSError:
            data = b""
        try:
            asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
        except (RuntimeError, concurrent.futures.CancelledError):
            return  # the loop has ended
        if not data:
            return


async def run_proxy_ssh(*, ssh_proxy: str, login: str, target_host: str, target_port: int,
                        cluster: str, key_path: Path, cert_path: Path,
                        known_hosts: Path) -> int:
    """Relay stdin/stdout to the target; the exit status (0, or the proxy's refusal status
    after printing its reason on stderr)."""
    host, port = parse_address(ssh_proxy)
    try:
        key = asyncssh.read_private_key(str(key_path))
        cert = asyncssh.read_certificate(str(cert_path))
        conn = await asyncssh.connect(
            host, port, username=login, client_keys=[(key, cert)], known_hosts=str(known_hosts),
            agent_path=None, **client_algorithms())
    except asyncssh.PermissionDenied as err:
        raise AccessDenied(f"the proxy refused the certificate: {err.reason}") from err
    except (OSError, asyncssh.Error) as err:
        raise ConnectionProblem(f"cannot reach the proxy at {ssh_proxy}: {err}") from err
    async with conn:
        try:
            writer, reader, errors = await conn.open_session(
                subsystem=proxy_subsystem(strip_cluster(target_host, cluster), target_port,
                                          cluster), encoding=None)
        except asyncssh.ChannelOpenError as err:
            raise ConnectionProblem(f"cannot reach {target_host}: {err.reason}") from err
        read_stdin = await open_stdin()
        reason = asyncio.create_task(errors.read())

        async def upstream() -> None:
            while data := await read_stdin():
                writer.write(data)
                await writer.drain()
            writer.write_eof()

        async def downstream() -> None:
            out = sys.stdout.buffer.fileno()
            while data := await reader.read(_CHUNK):
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view):]

        up = asyncio.create_task(upstream())
        try:
            await downstream()
        except asyncssh.Error as err:  # the proxy went away in the middle
            raise ConnectionProblem(f"lost the connection to the proxy at {ssh_proxy}: "
                                    f"{err.reason}") from err
        finally:
            up.cancel()
            await asyncio.gather(up, return_exceptions=True)
        status = cast("asyncssh.SSHClientChannel[bytes]", writer.channel).get_exit_status()
        text = b""
        if status:
            try:
                async with asyncio.timeout(_REASON_WAIT):
                    text = await reason
            except (TimeoutError, asyncssh.Error):
                text = b""
        reason.cancel()
        await asyncio.gather(reason, return_exceptions=True)
        writer.close()
    if not status:
        return 0
    message = one_line(text.decode(errors="replace")) or \
        f"the proxy closed the connection to {target_host} (exit status {status})"
    print(f"lmsh: {message}", file=sys.stderr, flush=True)
    return status if 0 < status < 256 else 1
