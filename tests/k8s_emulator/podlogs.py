"""``kubectl logs``: the ``pods/log`` subresource for pods that run (``pods.py``).

Used by ``apiserver.py``. The answer is ``text/plain``: the container's output lines
(``container`` names it; required when the pod has several), only the last ``tailLines``,
each prefixed with its RFC 3339 time and a space when ``timestamps=true``, limited to
``limitBytes``. With ``follow=true`` the response stays open and streams new lines until the
process exits, the emulator stops or the client leaves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import aiohttp.web
from multidict import MultiMapping

from .errors import ApiError
from .pods import PodRuntime

__all__ = ["serve_logs"]


def _int(params: MultiMapping[str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise ApiError.bad_request(f'{name}: Invalid value: "{value}"')
    return int(value)


async def serve_logs(
    request: aiohttp.web.BaseRequest,
    runtime: PodRuntime,
    namespace: str,
    name: str,
    params: MultiMapping[str],
    closing: Callable[[], bool],
) -> aiohttp.web.StreamResponse:
    pod = runtime.pod(namespace, name)
    if not params.get("container") and len(pod.containers) > 1:
        raise ApiError.bad_request(
            f"a container name must be specified for pod {name}, choose one of: "
            f"[{' '.join(pod.containers)}]"
        )
    container = runtime.container(namespace, name, params.get("container"))
    tail, limit = _int(params, "tailLines"), _int(params, "limitBytes")
    follow = params.get("follow") in ("true", "1")
    timestamps = params.get("timestamps") in ("true", "1")
    response = aiohttp.web.StreamResponse(headers={"Content-Type": "text/plain"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    position = max(len(container.lines) - tail, 0) if tail is not None else 0
    sent = 0
    with contextlib.suppress(ConnectionResetError):
        while True:
            lines, position = container.lines[position:], len(container.lines)
            chunk = b"".join(
                (f"{ts} ".encode() if timestamps else b"") + line for ts, line in lines
            )
            if limit is not None:
                chunk = chunk[: max(limit - sent, 0)]
            if chunk:
                await response.write(chunk)
                sent += len(chunk)
            if not follow or (limit is not None and sent >= limit) or closing():
                break
            if container.exited.is_set() and position == len(container.lines):
                break
            await container.changed()
        await response.write_eof()
    return response
