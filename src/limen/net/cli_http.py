"""The JSON-over-HTTPS client of the command lines (``lmctl``, ``lmsh``), on the standard
library's ``http.client``.

The same calls, answers and typed errors as ``limen.net.http.ApiClient`` (aiohttp, which the
long-running services use), without importing aiohttp: a command is started for each action,
and OpenSSH starts one for every ``ssh``, so its start-up is what the user waits for. The TLS
context is the caller's, role checks included (``limen.ca.peer_role`` covers blocking sockets
too). Calls run one at a time in a worker thread over one kept-alive connection; a ``GET`` whose
kept-alive connection turns out closed by the server is sent once more on a new one.

Called by ``limen.client.webapi`` (``lmsh``) and ``limen.cli.admin_api`` (``lmctl``).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import threading
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from limen.errors import BadParameter, ConnectionProblem, TlsVerificationFailed
from limen.net.api_answer import read_answer, refuse_redirect

__all__ = ["CliApiClient"]

_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class CliApiClient:
    """A small HTTPS JSON client raising Limen's typed errors (``base_url``: https://HOST:PORT)."""

    def __init__(self, base_url: str, ssl_context: ssl.SSLContext, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme != "https" or not parts.hostname:
            raise BadParameter(f"not an https:// address: {base_url}")
        self._host, self._port = parts.hostname, parts.port or 443
        self._ssl = ssl_context
        self._timeout = timeout
        self._connection: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()

    async def __aenter__(self) -> CliApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        with self._lock:
            self._drop()

    async def call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        headers: Mapping[str, str] | None = None, data: bytes | BinaryIO | None = None,
    ) -> Any:
        """``body`` is sent as JSON; ``data`` (bytes or a binary file, streamed) instead."""
        target = path + (f"?{urlencode(params)}" if params else "")
        payload = json.dumps(body).encode() if body is not None and data is None else data
        sent = {"Accept": "application/json", **(headers or {})}
        if body is not None and data is None:
            sent["Content-Type"] = "application/json"
        return await asyncio.to_thread(self._call, method, target, payload, sent)

    def _call(self, method: str, target: str, payload: bytes | BinaryIO | None,
              headers: dict[str, str]) -> Any:
        url = f"{self.base_url}{target}"
        with self._lock:
            reused = self._connection is not None
            try:
                status, raw = self._exchange(method, target, payload, headers)
            except _STALE:
                self._drop()
                if not (reused and method == "GET"):
                    raise ConnectionProblem(f"cannot reach {self.base_url}: the connection "
                                            "was closed before an answer") from None
                status, raw = self._exchange(method, target, payload, headers)
        refuse_redirect(url, status)
        return read_answer(url, status, raw)

    def _exchange(self, method: str, target: str, payload: bytes | BinaryIO | None,
                  headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            if self._connection is None:
                self._connection = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl)
            self._connection.request(method, target, body=payload, headers=headers)
            response = self._connection.getresponse()
            raw = response.read()
            if response.will_close:
                self._drop()
            return response.status, raw
        except _STALE:
            raise
        except ssl.SSLCertVerificationError as err:
            self._drop()
            raise TlsVerificationFailed(self.base_url, err) from err
        except (http.client.HTTPException, OSError) as err:
            self._drop()
            reason = str(err) or type(err).__name__
            raise ConnectionProblem(f"cannot reach {self.base_url}: {reason}") from err

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
