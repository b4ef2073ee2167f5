"""JSON-over-HTTPS plumbing: the server-side error mapping and the typed client.

Errors cross the wire as ``{"error": {"code": ..., "message": ...}}`` with the HTTP status of
``limen.errors``; ``ApiClient`` turns them back into the same typed exceptions. Called by the
auth API, the proxy's web API, the agents and the client.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web

from limen.errors import (
    BadParameter,
    ConnectionProblem,
    LimenError,
    NotFound,
    TlsVerificationFailed,
)
from limen.net.api_answer import read_answer, refuse_redirect
from limen.net.json_limits import loads_bounded

__all__ = ["ApiClient", "error_middleware", "json_body"]

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except LimenError as err:
        return web.json_response(
            {"error": {"code": err.code, "message": str(err)}}, status=err.http_status
        )
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as err:
        if not request.path.startswith("/v1/"):
            raise
        # an API path this server does not serve (e.g. an older server): the typed error, so
        # a client can tell it from a failure
        return web.json_response({"error": {"code": NotFound.code, "message": (
            f"{request.method} {request.path} is not an API of this server")}},
            status=err.status)
    except web.HTTPException:
        raise
    except ConnectionResetError:  # the client went away mid-request: nothing to answer
        log.debug("client left during %s %s", request.method, request.path)
        return web.Response(status=400)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return web.json_response(
            {"error": {"code": "internal", "message": "internal error (see the server log)"}},
            status=500,
        )


async def json_body(request: web.Request, max_bytes: int = 8 << 20) -> dict[str, Any]:
    """The request's JSON object, or ``BadParameter`` with a clear sentence (HTTP 400).

    Bounded (``limen.net.json_limits``): nesting deeper than 64 levels, numbers longer than
    100 characters and ``NaN``/``Infinity`` are refused before they reach a handler."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadParameter("request body too large")
    try:
        text = await request.text()
    except (UnicodeDecodeError, LookupError) as err:  # bad bytes, or an unknown charset
        raise BadParameter(f"request body is not valid JSON text: {type(err).__name__}") \
            from None
    body = loads_bounded(text)
    if not isinstance(body, dict):
        raise BadParameter("request body must be a JSON object")
    return body


class ApiClient:
    """A small HTTPS JSON client raising Limen's typed errors."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext | bool,
                 timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._ssl = ssl_context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)
            )
        return self._session

    async def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None, data: Any = None,
    ) -> Any:
        """``body`` is sent as JSON; ``data`` (bytes or a binary file, streamed) instead."""
        url = f"{self.base_url}{path}"
        try:
            async with self._get_session().request(
                method, url, json=body if data is None else None, data=data, params=params,
                headers=headers, allow_redirects=False,  # a body never follows a redirect
            ) as resp:
                refuse_redirect(url, resp.status)
                raw = await resp.read()
        except aiohttp.ClientConnectorCertificateError as err:
            raise TlsVerificationFailed(self.base_url, err.certificate_error) from err
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            reason = str(err) or type(err).__name__
            raise ConnectionProblem(f"cannot reach {self.base_url}: {reason}") from err
        return read_answer(url, resp.status, raw)
