"""Auth API routes for access requests, reached by users through the proxy
(``/v1/webapi/user/requests...``, the user's certificate forwarded and verified again)::

    POST /v1/requests                {roles: [...], reason?} -> the request (PENDING)
    GET  /v1/requests                the caller's requests and those the caller may review
    GET  /v1/requests/{id}           one of them
    POST /v1/requests/{id}/review    {state: approved|denied, reason?} -> the request
    POST /v1/requests/{id}/certs     {ttl_seconds?} -> new certificates for the key of the
                                     caller's certificate, with the approved request's roles,
                                     ending no later than the request and the current
                                     certificate (``lmsh login --request-id`` when logged in)

The rules live in :mod:`limen.auth.access_requests`. Registered by ``limen.auth.http.app``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from limen.api.resources import Kind
from limen.auth.core import AuthServer, LoginResult
from limen.auth.http.fields import optional_str, str_list
from limen.ca.identity import Identity
from limen.ca.keys import PublicKey
from limen.errors import AccessDenied, BadParameter
from limen.net.http import json_body

__all__ = ["login_answer", "request_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]
KeyOf = Callable[[web.Request], PublicKey]

_REVIEW_STATES = {"approved": True, "denied": False}


def login_answer(result: LoginResult) -> dict[str, Any]:
    """The JSON of a login: certificates, identity summary and the CAs to trust."""
    ident = result.certs.identity
    return {
        "cluster": result.cluster, "user": ident.username, "roles": list(ident.roles),
        "logins": list(ident.logins), "expires": result.certs.expires.isoformat(),
        "access_requests": list(ident.access_requests),
        "ssh_cert": result.certs.ssh_cert.decode(), "tls_cert": result.certs.tls_cert.decode(),
        "tls_cas": result.tls_cas, "known_hosts": result.known_hosts,
    }


def request_routes(auth: AuthServer, identity_of: IdentityOf,
                   forwarded_key: KeyOf) -> list[web.RouteDef]:
    requests = auth.access_requests

    async def create(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        body = await json_body(request)
        created = await requests.create(identity, str_list(body, "roles"),
                                        optional_str(body, "reason"))
        return web.json_response(created.to_json())

    async def listing(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        return web.json_response({"items": [r.to_json() for r in await requests.list(identity)]})

    async def one(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        found = await requests.get(identity, request.match_info["request_id"])
        return web.json_response(found.to_json())

    async def review(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        body = await json_body(request)
        state = optional_str(body, "state")
        if state not in _REVIEW_STATES:
            raise BadParameter("state must be approved or denied")
        reviewed = await requests.review(identity, request.match_info["request_id"],
                                         _REVIEW_STATES[state], optional_str(body, "reason"))
        return web.json_response(reviewed.to_json())

    async def certs(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        if identity.is_system or identity.not_after is None:
            raise AccessDenied("certificates with an access request are for users")
        body = await json_body(request)
        ttl = body.get("ttl_seconds")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise BadParameter("ttl_seconds must be a positive integer")
        user = await auth.store.get(Kind.USER, identity.username)
        key = forwarded_key(request).public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
        issued = await auth.issue_for_user(
            user, key.decode(), timedelta(seconds=ttl) if ttl else None,
            request_id=request.match_info["request_id"], not_after=identity.not_after)
        return web.json_response(login_answer(await auth.login_result(issued)))

    return [
        web.post("/v1/requests", create),
        web.get("/v1/requests", listing),
        web.get("/v1/requests/{request_id}", one),
        web.post("/v1/requests/{request_id}/review", review),
        web.post("/v1/requests/{request_id}/certs", certs),
    ]
