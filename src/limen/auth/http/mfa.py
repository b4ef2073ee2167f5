"""Auth API routes of WebAuthn security keys::

    POST /v1/login/webauthn/begin  {user, password} → {webauthn: request options}; the first
                                   step of a login with a key (the caller must be a proxy;
                                   ``/v1/login`` then takes {webauthn: the key's answer})
    GET  /v1/mfa                   the caller's second factors (name, type, added, last_used)
    POST /v1/mfa/confirm/begin     → {otp: has the app, webauthn: request options for the
                                   caller's keys or null}: what proves a change (below)
    POST /v1/mfa/register/begin    {name} → {webauthn: creation options}
    POST /v1/mfa/register          {name, webauthn: the key's answer, proof} → the key
    POST /v1/mfa/remove            {name, proof} → what was removed (the last second factor
                                   is refused while the cluster requires one)

``proof`` is ``{otp: CODE}`` or ``{webauthn: a registered key's answer to the confirm
challenge}``: a change needs a second factor the user has already
(``limen.auth.credentials.webauthn_keys``).

The ``/v1/mfa`` routes act for the user of the certificate the proxy forwards
(``/v1/webapi/user/mfa...``: lmsh's certificate or the web UI's session); only local users
(who signed up with a link) have second factors. Every change and refusal is audited
(``mfa.add``, ``mfa.remove``, with the reason of a refusal); key material never is.
Registered by ``limen.auth.http.app``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from limen.auth.core import AuthServer
from limen.auth.credentials.webauthn import WebAuthnRefused
from limen.auth.credentials.webauthn_keys import UserKeys
from limen.auth.http.fields import required_str
from limen.ca.identity import Identity, SystemRole
from limen.errors import AccessDenied, BadParameter, LimenError
from limen.net.http import json_body

__all__ = ["key_answer", "mfa_routes"]

IdentityOf = Callable[[web.Request], Awaitable[Identity]]


def key_answer(body: Mapping[str, Any], key: str = "webauthn") -> dict[str, Any] | None:
    """The security key's answer in a request body (a JSON object), or None."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadParameter(f"{key} must be the security key's answer (a JSON object)")
    return value


def mfa_routes(auth: AuthServer, identity_of: IdentityOf) -> list[web.RouteDef]:
    keys = UserKeys(auth.backend, auth.clock, auth.users.challenges)
    required = auth.settings.second_factor != "off"

    async def user_of(request: web.Request) -> str:
        identity = await identity_of(request)
        if identity.is_system:
            raise AccessDenied("second factors belong to users, not to cluster components")
        return identity.username

    async def login_begin(request: web.Request) -> web.Response:
        caller = await identity_of(request)
        if caller.system_role is not SystemRole.PROXY:
            raise AccessDenied("only a proxy may start a login")
        body = await json_body(request)
        return web.json_response(await auth.webauthn_login_begin(
            required_str(body, "user"), required_str(body, "password"),
            remote_addr=str(body.get("remote_addr", ""))))

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"items": await keys.list(await user_of(request))})

    async def confirm_begin(request: web.Request) -> web.Response:
        user = await user_of(request)
        return web.json_response(await keys.confirm_begin(user, await auth.webauthn_rp()))

    async def register_begin(request: web.Request) -> web.Response:
        user = await user_of(request)
        body = await json_body(request)
        name = required_str(body, "name")
        try:
            options = await keys.register_begin(user, name, await auth.webauthn_rp())
        except LimenError as err:
            await auth.emit("mfa.add", success=False, user=user, name=name, type="webauthn",
                            reason=str(err))
            raise
        return web.json_response({"webauthn": options})

    async def register(request: web.Request) -> web.Response:
        user = await user_of(request)
        body = await json_body(request)
        name = required_str(body, "name")
        try:
            answer = key_answer(body)
            if answer is None:
                raise BadParameter("webauthn (the security key's answer) is required")
            added = await keys.register(user, name, answer, await auth.webauthn_rp(),
                                        _proof(body))
        except LimenError as err:
            reason = err.reason_internal if isinstance(err, WebAuthnRefused) else "refused"
            await auth.emit("mfa.add", success=False, user=user, name=name, type="webauthn",
                            reason=reason, message=str(err))
            raise
        await auth.emit("mfa.add", user=user, name=name, type="webauthn")
        return web.json_response(added)

    async def remove(request: web.Request) -> web.Response:
        user = await user_of(request)
        body = await json_body(request)
        name = required_str(body, "name")
        try:
            removed = await keys.remove(user, name, await auth.webauthn_rp(),
                                        required=required, proof=_proof(body))
        except LimenError as err:
            reason = err.reason_internal if isinstance(err, WebAuthnRefused) else "refused"
            await auth.emit("mfa.remove", success=False, user=user, name=name, reason=reason,
                            message=str(err))
            raise
        await auth.emit("mfa.remove", user=user, **removed)
        return web.json_response(removed)

    return [web.post("/v1/login/webauthn/begin", login_begin), web.get("/v1/mfa", listing),
            web.post("/v1/mfa/confirm/begin", confirm_begin),
            web.post("/v1/mfa/register/begin", register_begin),
            web.post("/v1/mfa/register", register), web.post("/v1/mfa/remove", remove)]


def _proof(body: Mapping[str, Any]) -> dict[str, Any] | None:
    proof = body.get("proof")
    if proof is not None and not isinstance(proof, dict):
        raise BadParameter("proof must be {otp: CODE} or {webauthn: a key's answer}")
    return proof
