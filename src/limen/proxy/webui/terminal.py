"""The web terminal: ``GET /v1/webapi/terminal`` (WebSocket) → a shell on a node, opened by
the proxy through its own SSH front with the web session's certificate: the same path as
``ssh -J proxy node`` (the front authenticates the certificate, the connector resolves the node,
checks RBAC and dials its tunnel; the node agent checks again, records and audits the session
exactly as for ``lmsh ssh``).

The handshake: the ``Origin`` must be the proxy's own (``https://`` + the Host the browser
asked for), the session cookie valid, and the first message, within 10 s, the JSON
``{"csrf": TOKEN, "node": NAME_OR_ID, "login": LOGIN, "cluster": NAME?, "cols": N, "rows": N}``.
Then binary frames are keystrokes and the shell's output (until either side ends, or the web
session logs out, its certificates expire or a lock targets its user: at once under
``lock: strict``, at the next check otherwise, ``limen.proxy.webui.web_locks``), text frames
JSON control messages:
``{"resize": [cols, rows]}`` from the page, ``{"connected": node}``, ``{"error": reason}`` and
``{"exit": status}`` from the proxy. Mounted by ``limen.proxy.webui.mount``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncssh
from aiohttp import web

from limen.errors import AccessDenied, BadParameter, LimenError
from limen.net.address import parse_address
from limen.net.sshalgs import client_algorithms
from limen.proxy.webui.sessions import Refused, WebSession, WebSessions
from limen.proxy.webui.web_locks import WebLocks
from limen.services.locks import Locked

__all__ = ["TerminalRequest", "terminal_route"]

log = logging.getLogger(__name__)
_FIRST_MESSAGE_WAIT = 10.0
_CHUNK = 64 << 10
_NAME_LIMIT = 253
OnRefused = Callable[[web.Request, str, Refused], Awaitable[None]]
OnLocked = Callable[..., Awaitable[None]]


class TerminalRequest:
    """The page's first message, checked."""

    def __init__(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise BadParameter("the first message must be a JSON object")
        self.csrf = self._name(raw, "csrf", 128)
        self.node = self._name(raw, "node")
        self.login = self._name(raw, "login", 64)
        self.cluster = str(raw.get("cluster") or "")[:_NAME_LIMIT]
        self.cols, self.rows = self._size(raw.get("cols")), self._size(raw.get("rows"))

    @staticmethod
    def _name(raw: dict[str, Any], key: str, limit: int = _NAME_LIMIT) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value or len(value) > limit \
                or not value.isprintable() or any(c in value for c in " @:/"):
            raise BadParameter(f"{key} is missing or not a valid name")
        return value

    @staticmethod
    def _size(value: Any) -> int:
        return value if isinstance(value, int) and 1 <= value <= 1000 else 80


def _own_origin(request: web.Request) -> str:
    return f"https://{request.host}"


async def _first_message(ws: web.WebSocketResponse) -> TerminalRequest:
    async with asyncio.timeout(_FIRST_MESSAGE_WAIT):
        message = await ws.receive()
    if message.type is not aiohttp.WSMsgType.TEXT or len(message.data) > 4096:
        raise BadParameter("the first message must be the JSON handshake")
    try:
        return TerminalRequest(json.loads(message.data))
    except ValueError:
        raise BadParameter("the first message is not JSON") from None


async def _tell(ws: web.WebSocketResponse, message: dict[str, Any]) -> None:
    """A control message to the page, unless it has gone."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_str(json.dumps(message))


async def _pump_input(ws: web.WebSocketResponse,
                      process: asyncssh.SSHClientProcess[bytes]) -> None:
    async for message in ws:
        if message.type is aiohttp.WSMsgType.BINARY:
            process.stdin.write(message.data)
        elif message.type is aiohttp.WSMsgType.TEXT:
            with contextlib.suppress(ValueError, TypeError, KeyError):
                cols, rows = json.loads(message.data)["resize"]
                if isinstance(cols, int) and isinstance(rows, int) \
                        and 0 < cols <= 1000 and 0 < rows <= 1000:
                    process.change_terminal_size(cols, rows)
        else:
            break


async def _pump_output(ws: web.WebSocketResponse,
                       process: asyncssh.SSHClientProcess[bytes]) -> int:
    while data := await process.stdout.read(_CHUNK):
        await ws.send_bytes(data)
    status = (await process.wait()).exit_status
    return status if status is not None else -1


async def _session_over(session: WebSession) -> None:
    """Returns at logout, or when the session's certificates expire."""
    seconds = (session.cert_expires - datetime.now(UTC)).total_seconds()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            await session.ended.wait()


def _ssh_front_host(address: str) -> tuple[str, int]:
    host, port = parse_address(address)
    if host in ("0.0.0.0", ""):  # noqa: S104 (the address the front listens on)
        return "127.0.0.1", port
    return ("::1", port) if host == "::" else (host, port)


async def _never() -> Locked:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _locked_now(locks: WebLocks, session: WebSession) -> Locked | None:
    """The lock in force on ``session`` now, if the view knows one."""
    try:
        await locks.check(session)
    except Locked as err:
        return err
    except (LimenError, OSError):
        return None
    return None


async def _shell(ws: web.WebSocketResponse, session: WebSession, wanted: TerminalRequest,
                 ssh_front: str, locks: WebLocks | None) -> Locked | None:
    """Runs the shell; the lock that ended it, if one did."""
    host, port = _ssh_front_host(ssh_front)
    target = wanted.node if not wanted.cluster or wanted.cluster == session.cluster \
        else f"{wanted.node}.{wanted.cluster}"
    key = asyncssh.import_private_key(session.private_key_pem)
    cert = asyncssh.import_certificate(session.ssh_cert)
    known = asyncssh.import_known_hosts("".join(f"{line}\n" for line in session.known_hosts))
    options: dict[str, Any] = {"username": wanted.login, "client_keys": [(key, cert)],
                               "known_hosts": known, "agent_path": None,
                               **client_algorithms()}
    async with asyncssh.connect(host, port, **options) as jump, \
            jump.connect_ssh(target, 22, **options) as conn:
        process = await conn.create_process(term_type="xterm-256color",
                                            term_size=(wanted.cols, wanted.rows),
                                            encoding=None)
        await _tell(ws, {"connected": wanted.node})
        output = asyncio.create_task(_pump_output(ws, process))
        typing = asyncio.create_task(_pump_input(ws, process))
        logout = asyncio.create_task(_session_over(session))
        locked = asyncio.create_task(
            locks.watch(session, await locks.mode(session)) if locks else _never())
        try:
            await asyncio.wait({output, typing, logout, locked},
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (output, typing, logout, locked):
                task.cancel()
            await asyncio.gather(output, typing, logout, locked, return_exceptions=True)
            process.close()
        if locked.done() and not locked.cancelled() and locked.exception() is None:
            await _tell(ws, {"error": str(locked.result())})
            return locked.result()
        ended_by = await _locked_now(locks, session) if locks and output.done() else None
        if ended_by is not None:  # the node agent ended it for this lock (and audited that)
            await _tell(ws, {"error": str(ended_by)})
            return None
        if session.ended.is_set():
            await _tell(ws, {"error": "logged out: the session has ended"})
        elif logout.done() and not logout.cancelled():
            await _tell(ws, {"error": "your certificates expired: log in again"})
        if output.done() and not output.cancelled() and output.exception() is None:
            await _tell(ws, {"exit": output.result()})
    return None


def terminal_route(sessions: WebSessions, ssh_front: Callable[[], str],
                   refused: OnRefused, locks: WebLocks | None = None,
                   on_locked: OnLocked | None = None) -> web.RouteDef:
    """``refused``: audits a refusal of the handshake (the middleware cannot: the WebSocket
    was accepted already); ``locks``: ends the terminal when a lock targets its user, which
    ``on_locked(session, err, remote_addr, action=, mode=)`` audits."""
    async def terminal(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Origin") != _own_origin(request):
            raise Refused("web.terminal", "the terminal is only opened from the proxy's own "
                          "pages (wrong Origin)")
        session = sessions.current(request, changes_state=False)
        ws = web.WebSocketResponse(max_msg_size=1 << 20, heartbeat=30.0)
        await ws.prepare(request)
        try:
            wanted = await _first_message(ws)
            if not sessions.csrf_ok(session, wanted.csrf):
                raise Refused("web.terminal", "missing or wrong CSRF token")
            ended_by = await _shell(ws, session, wanted, ssh_front(), locks)
            if ended_by is not None and on_locked is not None and locks is not None:
                await on_locked(session, ended_by, request.remote or "", action="session",
                                mode=await locks.mode(session), node=wanted.node,
                                login=wanted.login)
        except Refused as err:
            await refused(request, session.user, err)
            await _tell(ws, {"error": str(err)})
        except (AccessDenied, BadParameter) as err:
            await _tell(ws, {"error": str(err)})
        except TimeoutError:
            await _tell(ws, {"error": "no handshake message within 10 s"})
        except asyncssh.ChannelOpenError as err:
            await _tell(ws, {"error": err.reason})
        except asyncssh.PermissionDenied as err:
            await _tell(ws, {"error": f"refused: {err.reason}"})
        except (OSError, asyncssh.Error) as err:
            log.info("web terminal of %s: %s", session.user, err)
            await _tell(ws, {"error": f"the connection failed: {err}"})
        finally:
            await ws.close()
        return ws

    return web.get("/v1/webapi/terminal", terminal)
