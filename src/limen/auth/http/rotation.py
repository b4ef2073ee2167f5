"""Auth API routes of CA rotation::

    POST /v1/authorities/{type}/rotate   {phase?, rollback?, manual?, grace_period_seconds?}
        ◀── the CA's new rotation state (limen.auth.rotation.RotationState.to_dict)
    POST /v1/host/renew                  {ssh_cert}
        ◀── {ssh_cert, host_ca_keys, user_ca_keys}

``rotate`` (``lmctl auth rotate``): only admins may call it; anyone else (a user, whatever
their roles, an agent, a proxy) is refused with 403 and the refusal is audited as
``ca.rotation`` (``success: false``); the work is
:func:`limen.auth.rotation_service.rotate_ca`. ``renew``: a host apart from auth renews its SSH
host certificate (``limen.auth.host_renewal``). Registered by ``limen.auth.http.app.build_app``.

:func:`check_declared_rotation` is the same rule for ``POST /v1/resources/apply`` (``lmctl
apply``): a Cluster document carrying ``spec.rotation`` (CA rotations declared on it,
``limen.auth.rotation_declared``) is refused from anyone but an admin, whatever their roles
allow on the kind Cluster, and audited as ``ca.rotation`` (``success: false``). The Git sync
writes its documents itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from limen.api.resources import Kind, Resource
from limen.auth.core import AuthServer
from limen.auth.host_renewal import renew_host_cert
from limen.auth.http.authz import require_system
from limen.auth.http.fields import optional_str
from limen.auth.rotation_service import rotate_ca
from limen.ca.identity import Identity
from limen.errors import AccessDenied, BadParameter
from limen.net.http import json_body

__all__ = ["HOST_RENEW_PATH", "check_declared_rotation", "rotation_routes"]

HOST_RENEW_PATH = "/v1/host/renew"

IdentityOf = Callable[[web.Request], Awaitable[Identity]]


def rotation_routes(auth: AuthServer, identity_of: IdentityOf) -> list[web.RouteDef]:
    async def rotate(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        ca_type = request.match_info["type"]
        who = identity.username or (identity.system_role or "")
        try:
            require_system(identity, ())
        except AccessDenied as err:
            await auth.emit("ca.rotation", success=False, user=who, ca_type=ca_type,
                            reason=str(err))
            raise
        body = await json_body(request)
        grace = body.get("grace_period_seconds")
        if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
            raise BadParameter("grace_period_seconds must be an integer")
        state = await rotate_ca(auth, ca_type, actor=who, phase=optional_str(body, "phase"),
                                rollback=body.get("rollback") is True,
                                manual=body.get("manual", True) is not False,
                                grace_period_seconds=grace)
        return web.json_response(state)

    async def renew(request: web.Request) -> web.Response:
        identity = await identity_of(request)
        body = await json_body(request)
        cert = optional_str(body, "ssh_cert")
        if not cert:
            raise BadParameter("ssh_cert is required")
        return web.json_response(await renew_host_cert(auth, identity, cert))

    return [web.post("/v1/authorities/{type}/rotate", rotate),
            web.post(HOST_RENEW_PATH, renew)]


async def check_declared_rotation(auth: AuthServer, identity: Identity, actor: str,
                                  resources: Sequence[Resource]) -> None:
    """:class:`AccessDenied` (audited) when a non-admin applies a Cluster document that
    declares CA rotations: declaring one is rotating, which only admins may do."""
    for resource in resources:
        if resource.kind is not Kind.CLUSTER or not resource.spec.get("rotation"):
            continue
        try:
            require_system(identity, ())
        except AccessDenied as err:
            reason = (f"{err}: Cluster {resource.name} declares CA rotations (spec.rotation), "
                      "which only an admin or the Git sync may apply")
            await auth.emit("ca.rotation", success=False, user=actor,
                            via="cluster document", cluster_document=resource.name,
                            reason=reason)
            raise AccessDenied(reason) from None
