"""``lmsh proxy ssh``: the ProxyCommand that carries OpenSSH to a node through Limen's proxy.

It opens an SSH connection to the proxy's SSH front with the user's key and certificate
(verifying the proxy against the host CA in ``~/.limen/known_hosts``), requests the subsystem
``proxy:<host>:<port>@<cluster>``, and relays the subsystem's bytes to stdin/stdout, where
OpenSSH speaks its own end-to-end session with the node. Called by ``limen.cli.lmsh``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncssh

from limen.errors import AccessDenied, ConnectionProblem
from limen.net.address import parse_address

__all__ = ["proxy_subsystem", "run_proxy_ssh", "strip_cluster"]

_CHUNK = 256 * 1024


def strip_cluster(host: str, cluster: str) -> str:
    """``web1.demo`` → ``web1`` for cluster ``demo`` (the ``lmsh config`` host pattern)."""
    suffix = f".{cluster}"
    return host[: -len(suffix)] if host.endswith(suffix) and host != suffix else host


def proxy_subsystem(host: str, port: int, cluster: str) -> str:
    return f"proxy:{host}:{port}@{cluster}"


async def run_proxy_ssh(*, ssh_proxy: str, login: str, target_host: str, target_port: int,
                        cluster: str, key_path: Path, cert_path: Path, known_hosts: Path) -> None:
    host, port = parse_address(ssh_proxy)
    try:
        key = asyncssh.read_private_key(str(key_path))
        cert = asyncssh.read_certificate(str(cert_path))
        conn = await asyncssh.connect(
            host, port, username=login, client_keys=[(key, cert)], known_hosts=str(known_hosts),
            agent_path=None, encryption_algs=["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                              "chacha20-poly1305@openssh.com"])
    except asyncssh.PermissionDenied as err:
        raise AccessDenied(f"the proxy refused the certificate: {err.reason}") from err
    except (OSError, asyncssh.Error) as err:
        raise ConnectionProblem(f"cannot reach the proxy at {ssh_proxy}: {err}") from err
    async with conn:
        try:
            writer, reader, _stderr = await conn.open_session(
                subsystem=proxy_subsystem(strip_cluster(target_host, cluster), target_port,
                                          cluster), encoding=None)
        except asyncssh.ChannelOpenError as err:
            raise ConnectionProblem(f"cannot reach {target_host}: {err.reason}") from err
        loop = asyncio.get_running_loop()
        stdin_reader = asyncio.StreamReader(limit=_CHUNK)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin_reader),
                                     sys.stdin.buffer)

        async def upstream() -> None:
            while data := await stdin_reader.read(_CHUNK):
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
        await downstream()
        up.cancel()
        writer.close()
