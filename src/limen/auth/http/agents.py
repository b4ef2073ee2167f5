"""Auth API routes that agents and proxies running apart from auth use to hand over what they
record::

    POST /v1/events                      {"events": [event, ...]}   audit events (at least once;
                                         auth drops a uid it has already stored recently)
    POST /v1/recordings/{session_id}     body: the asciicast v2 file; header
                                         X-Limen-Recording-Meta: base64(JSON metadata)
    POST /v1/proxy/address               {"address": "host:port"} a proxy's public web address
                                         (sign-up links are built from it; proxies only)

Only system identities of this cluster (node, proxy, db, kube, app) may call them. A peer's
events are parsed again (``AuditEvent.from_dict`` re-scrubs their free fields), must name this
cluster, and get the caller's host id as ``server_id``; a call's events are written together
(one write and one fsync or commit: an agent's outbox hands over hundreds at a time). A
recording is streamed to a temporary file (in the recordings directory), checked to be
asciicast, and stored with its metadata in auth's recording store
(``limen.auth.recordings.recording_store``: that directory, or the PostgreSQL database every
auth replica reads) — an upload of a session id that is already
stored from another host is refused. Registered by
``limen.auth.http.app.build_app``; the agents' side is ``limen.agents.audit_outbox`` and
``limen.agents.recording_upload``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from limen.auth.core import AuthServer
from limen.auth.http.authz import require_system
from limen.auth.recordings import recording_store
from limen.ca.identity import Identity, SystemRole
from limen.errors import AccessDenied, BadParameter, LimitExceeded
from limen.events.emitter import emit_all
from limen.events.event import AuditEvent
from limen.net.http import json_body
from limen.recording.asciicast import parse_cast
from limen.recording.writer import check_session_id

__all__ = ["MAX_RECORDING_BYTES", "RECORDING_META_HEADER", "agent_routes"]

RECORDING_META_HEADER = "X-Limen-Recording-Meta"
MAX_RECORDING_BYTES = 1 << 30
MAX_EVENTS_PER_CALL = 1000
_AGENT_ROLES = (SystemRole.NODE, SystemRole.PROXY, SystemRole.DB, SystemRole.KUBE,
                SystemRole.APP)
_SEEN_UIDS = 100_000
ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]{1,253}:\d{1,5}$")

IdentityOf = Callable[[web.Request], Awaitable[Identity]]


def agent_routes(auth: AuthServer, identity_of: IdentityOf,
                 recordings: Path) -> list[web.RouteDef]:
    """The routes; ``recordings`` holds uploads being received, and is the recording store
    when the backend keeps none."""
    store = recording_store(auth.backend, recordings)
    seen: OrderedDict[str, None] = OrderedDict()

    async def caller(request: web.Request) -> Identity:
        identity = await identity_of(request)
        require_system(identity, _AGENT_ROLES)
        if identity.system_role is SystemRole.ADMIN:
            raise AccessDenied("only agents hand over events and recordings")
        return identity

    async def events(request: web.Request) -> web.Response:
        identity = await caller(request)
        body = await json_body(request)
        raw = body.get("events")
        if not isinstance(raw, list) or len(raw) > MAX_EVENTS_PER_CALL:
            raise BadParameter(f"events must be a list of at most {MAX_EVENTS_PER_CALL}")
        parsed: list[AuditEvent] = []
        in_batch: set[str] = set()
        for index, item in enumerate(raw):
            if not isinstance(item, dict):
                raise BadParameter(f"events[{index}] must be an object")
            event = AuditEvent.from_dict(item)
            if event.cluster != auth.cluster_name:
                raise BadParameter(f"events[{index}] names cluster {event.cluster!r}, not "
                                   f"{auth.cluster_name!r}")
            if event.uid in seen or event.uid in in_batch:
                continue
            in_batch.add(event.uid)
            fields = {**event.fields, "server_id": identity.host_id}
            parsed.append(AuditEvent(event.type, event.code, event.time, event.uid,
                                     event.cluster, event.success, event.user, fields))
        # all parsed before any is written (nothing half-applied), then written in one go:
        # one write and one fsync (or commit) for the call, not one per event
        await emit_all(auth.emitter, parsed)
        for event in parsed:
            seen[event.uid] = None
        while len(seen) > _SEEN_UIDS:
            seen.popitem(last=False)
        return web.json_response({"accepted": len(parsed)})

    async def recording(request: web.Request) -> web.Response:
        identity = await caller(request)
        session_id = check_session_id(request.match_info["session_id"])
        meta = _meta(request.headers.get(RECORDING_META_HEADER, ""))
        meta["server_id"] = identity.host_id
        previous = await store.stored_meta(session_id)
        if previous is not None and previous.get("server_id") not in (None, identity.host_id):
            raise AccessDenied(f"recording {session_id} belongs to another host")
        fd, path = await asyncio.to_thread(_upload_file, recordings)
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > MAX_RECORDING_BYTES:
                        raise LimitExceeded("the recording is larger than 1 GiB")
                    out.write(chunk)
            await asyncio.to_thread(_check_cast, path)
            await store.upload(session_id, path, meta)
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        await auth.emit("session.upload", session_id=session_id, server_id=identity.host_id,
                        incomplete=bool(meta.get("incomplete")))
        return web.json_response({"stored": session_id})

    async def proxy_address(request: web.Request) -> web.Response:
        identity = await caller(request)
        if identity.system_role is not SystemRole.PROXY:
            raise AccessDenied("only a proxy registers its public address")
        address = (await json_body(request)).get("address")
        if not isinstance(address, str) or not ADDRESS.match(address):
            raise BadParameter("address must be host:port")
        await auth.set_proxy_address(address)
        return web.json_response({"address": address})

    return [web.post("/v1/events", events), web.post("/v1/proxy/address", proxy_address),
            web.post("/v1/recordings/{session_id}", recording)]


def _upload_file(recordings: Path) -> tuple[int, Path]:
    recordings.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(dir=recordings, prefix=".upload-", suffix=".cast")
    return fd, Path(name)


def _meta(header: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.b64decode(header, validate=True)) if header else {}
    except (binascii.Error, ValueError):
        raise BadParameter(f"{RECORDING_META_HEADER} must be base64 JSON") from None
    if not isinstance(value, dict):
        raise BadParameter(f"{RECORDING_META_HEADER} must hold a JSON object")
    return value


def _check_cast(path: Path) -> None:
    with open(path, "rb") as handle:
        first = handle.readline(1 << 16)
    parse_cast(first)  # raises BadParameter when the header is not asciicast v2
