"""Watch streams of the Kubernetes API emulator (``GET ...?watch=true``).

Called by ``apiserver.py``. Semantics of kube-apiserver: without a
``resourceVersion`` (or with ``0``) the current objects come first as ADDED; with one, every
change after it; ``sendInitialEvents=true`` ends the initial ADDED events with a BOOKMARK
annotated ``k8s.io/initial-events-end``; an object entering or leaving the selectors arrives as
ADDED or DELETED; ``timeoutSeconds`` ends the stream; a trimmed resourceVersion gives an
``ERROR`` event with a 410 Status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp.web

from .errors import ApiError
from .history import WatchEvent
from .registry import ResourceType
from .store import ObjectStore

__all__ = ["serve_watch"]

Predicate = Callable[[Mapping[str, Any]], bool]


def _initial(
    store: ObjectStore,
    rtype: ResourceType,
    namespace: str | None,
    selected: Predicate,
    params: Mapping[str, str],
) -> list[dict[str, Any]]:
    lines = [
        {"type": "ADDED", "object": store.present(o, rtype)}
        for o in store.list(rtype, namespace)
        if selected(o)
    ]
    if params.get("sendInitialEvents") == "true" and params.get("allowWatchBookmarks") == "true":
        metadata = {
            "resourceVersion": str(store.resource_version),
            "annotations": {"k8s.io/initial-events-end": "true"},
        }
        lines.append(
            {
                "type": "BOOKMARK",
                "object": {
                    "kind": rtype.kind,
                    "apiVersion": rtype.api_version,
                    "metadata": metadata,
                },
            }
        )
    return lines


def _line(
    store: ObjectStore, event: WatchEvent, rtype: ResourceType, selected: Predicate
) -> dict[str, Any] | None:
    if event.group_plural != (rtype.group, rtype.plural):
        return None
    now = selected(event.obj)
    before = event.type == "MODIFIED" and event.old is not None and selected(event.old)
    if event.type != "MODIFIED":
        kind = event.type if now else None
    elif now:
        kind = "MODIFIED" if before else "ADDED"
    else:
        kind = "DELETED" if before else None
    return None if kind is None else {"type": kind, "object": store.present(event.obj, rtype)}


async def serve_watch(
    raw_request: aiohttp.web.BaseRequest,
    store: ObjectStore,
    rtype: ResourceType,
    *,
    namespace: str | None,
    name: str | None,
    labels: Predicate,
    fields: Predicate,
    params: Mapping[str, str],
    default_timeout: float,
    closing: Callable[[], bool],
) -> aiohttp.web.StreamResponse:
    """Stream events until ``timeoutSeconds``, ``closing()`` or the client leaves."""

    def selected(obj: Mapping[str, Any]) -> bool:
        meta = obj["metadata"]
        return (
            (namespace is None or meta.get("namespace") == namespace)
            and (name is None or meta["name"] == name)
            and labels(obj)
            and fields(obj)
        )

    since = params.get("resourceVersion") or "0"
    lines: list[dict[str, Any]] = []
    try:
        if since == "0" or params.get("sendInitialEvents") == "true":
            lines = _initial(store, rtype, namespace, selected, params)
            cursor = store.watch_history.cursor_after(store.resource_version)
        elif since.isdigit():
            cursor = store.watch_history.cursor_after(int(since))
        else:
            raise ApiError.bad_request(f'invalid resource version: "{since}"')
    except ApiError as e:
        if e.code != 410:
            raise
        lines, cursor = [{"type": "ERROR", "object": e.status()}], -1

    response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(raw_request)
    loop_time = asyncio.get_running_loop().time
    deadline = loop_time() + float(params.get("timeoutSeconds") or default_timeout)
    while True:
        if lines:
            try:
                await response.write(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
            except ConnectionResetError:  # the client went away: not an emulator failure
                return response
        if cursor < 0 or closing() or loop_time() >= deadline:
            break
        try:
            events, cursor = store.watch_history.read(cursor)
        except ApiError as e:
            lines, cursor = [{"type": "ERROR", "object": e.status()}], -1
            continue
        lines = [line for e in events if (line := _line(store, e, rtype, selected)) is not None]
        if not lines:
            await store.watch_history.wait(deadline - loop_time())
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response
