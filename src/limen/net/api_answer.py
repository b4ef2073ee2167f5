"""How a JSON API answer becomes a value or Limen's typed error, for both HTTP clients.

Errors cross the wire as ``{"error": {"code": ..., "message": ...}}`` with the HTTP status of
``limen.errors``. Called by ``limen.net.http.ApiClient`` (aiohttp, the services) and
``limen.net.cli_http.CliApiClient`` (the standard library, the command lines).
"""

from __future__ import annotations

from typing import Any

from limen.errors import BadParameter, ConnectionProblem, from_code
from limen.net.json_limits import loads_bounded

__all__ = ["read_answer", "refuse_redirect"]


def refuse_redirect(url: str, status: int) -> None:
    """Limen's APIs never redirect: a body must not follow one to another place."""
    if 300 <= status < 400:
        raise ConnectionProblem(f"{url} answered with a redirect (HTTP {status}); Limen's APIs "
                                "never redirect")


def read_answer(url: str, status: int, raw: bytes) -> Any:
    """The JSON value of an answer of ``status``, or the typed error it carries."""
    try:
        text = raw.decode("utf-8")
        payload = loads_bounded(text, "the answer") if text else None
    except (BadParameter, UnicodeDecodeError) as err:
        raise ConnectionProblem(f"{url} answered with something that is not JSON "
                                f"within bounds ({err})") from None
    if status >= 400:
        error = (payload or {}).get("error", {}) if isinstance(payload, dict) else {}
        raise from_code(str(error.get("code", "internal")),
                        str(error.get("message", f"HTTP {status} from {url}")))
    return payload
