"""Application access at auth: the online apps, the user's app certificate and the identity
token each forwarded request carries.

* :func:`online_apps` — the app Resources app agents heartbeat (``/presence/apps/<name>/
  <host_id>``), grouped by name.
* :func:`visible_apps` — those a user's roles admit (``app_labels``, deny first): ``lmsh apps
  ls``, with the public address (``spec.public_addr`` or ``<name>.<proxy host>``).
* :func:`issue_app_cert` — ``lmsh apps login NAME``: the caller's X.509 identity scoped to one
  app (``route_to_app``, ``usage: [app]``), for the same public key and no longer than the
  login certificate. Refused, and audited as ``access.denied``, when the roles do not admit the
  app; the proxy and the app agent decide again on every connection.
* :func:`app_token` — the proxy's ``POST /v1/apps/jwt``: the user's app certificate verified
  here again (TLS CA of this cluster, expiry, ``usage: app``, scoped to that app), the roles
  checked against the app's labels now, then the JWT (:mod:`limen.auth.app_jwt`) with ``aud``
  the app's URI.

Called by :mod:`limen.auth.http.apps`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from limen.api.app_spec import app_spec
from limen.auth import presence
from limen.auth.app_jwt import sign_app_jwt
from limen.auth.online_resources import OnlineResource, online_resources
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.identity import Identity
from limen.ca.keys import PublicKey
from limen.ca.x509_certs import sign_client_cert, verify_client_cert
from limen.errors import AccessDenied, BadParameter, NotFound

if TYPE_CHECKING:
    from limen.auth.core import AuthServer

__all__ = ["OnlineApp", "app_token", "issue_app_cert", "online_apps", "visible_apps"]

_MAX_NAME = 253


@dataclass(frozen=True)
class OnlineApp(OnlineResource):
    """An app some app agent heartbeats now."""

    @property
    def uri(self) -> str:
        return str(self.spec.get("uri", ""))


async def online_apps(auth: AuthServer) -> dict[str, OnlineApp]:
    """Every app some app agent heartbeats now, by name."""
    return await online_resources(auth, presence.APP_PRESENCE_PREFIX, OnlineApp)


async def visible_apps(auth: AuthServer, identity: Identity) -> list[dict[str, Any]]:
    """The online apps the roles of ``identity`` admit, as ``lmsh apps ls`` shows them."""
    role_set = await auth.role_set(identity)
    try:
        proxy = await auth.proxy_address()
    except NotFound:  # no proxy yet: an app without public_addr is listed as <name>
        proxy = ""
    items: list[dict[str, Any]] = []
    for name, app in sorted((await online_apps(auth)).items()):
        if not role_set.check_app(app.labels).allowed:
            continue
        try:
            public = app_spec(name, app.spec, proxy).public_addr
        except BadParameter:
            continue
        items.append({"name": name, "labels": app.labels, "public_addr": public,
                      "description": str(app.spec.get("description", ""))})
    return items


def _check_name(app: str) -> None:
    if not app or len(app) > _MAX_NAME or any(ord(c) < 0x21 or c == "\x7f" for c in app):
        raise BadParameter(f"invalid app name {app[:64]!r}")


async def _admitted(auth: AuthServer, identity: Identity, app: str, action: str) -> OnlineApp:
    """The online app, or NotFound / AccessDenied (audited) when the roles refuse it."""
    online = (await online_apps(auth)).get(app)
    if online is None:
        raise NotFound(f"app {app!r} is not online (no app agent serves it)")
    decision = (await auth.role_set(identity)).check_app(online.labels)
    if not decision.allowed:
        await auth.emit("access.denied", success=False, user=identity.username, action=action,
                        app=app, role=decision.role, rule=decision.rule,
                        reason=decision.reason)
        raise AccessDenied(f"{identity.username} may not use app {app}: {decision.reason}")
    return online


async def issue_app_cert(auth: AuthServer, identity: Identity, public_key: PublicKey,
                         app: str) -> tuple[bytes, datetime]:
    """The app certificate (PEM) for ``lmsh apps login`` and its expiry; see the module."""
    _check_name(app)
    if identity.is_system:
        raise AccessDenied("app certificates are for users")
    if identity.cluster != auth.cluster_name:
        raise AccessDenied("app certificates are issued by the user's own cluster")
    await _admitted(auth, identity, app, "app.login")
    now = auth.now()
    assert identity.not_after is not None
    ttl = identity.not_after - now
    if ttl < timedelta(minutes=1):
        raise BadParameter("the login certificate expires within a minute: run lmsh login")
    scoped = replace(identity, route_to_app=app, route_to_kube=None, route_to_db=None,
                     usage=("app",), not_before=None, not_after=None)
    cert = sign_client_cert(auth.authorities.get(CertAuthorityType.TLS), public_key, scoped,
                            ttl, now=now)
    expires = now + ttl
    await auth.emit("cert.create", user=identity.username, cert_type="app", app=app,
                    expires=expires.isoformat())
    return cert.public_bytes(Encoding.PEM), expires


async def app_token(auth: AuthServer, user_cert_pem: str, app: str) -> tuple[str, datetime]:
    """The JWT for the holder of ``user_cert_pem`` at ``app`` and its expiry; see the
    module."""
    _check_name(app)
    trusted = tls_trust_map(
        [ca for ca in (await auth.authorities.trusted(CertAuthorityType.TLS)).values()
         if ca.cluster == auth.cluster_name])
    try:
        der = x509.load_pem_x509_certificate(user_cert_pem.encode()).public_bytes(Encoding.DER)
    except ValueError:
        raise BadParameter("user_cert is not a PEM certificate") from None
    identity = verify_client_cert(der, trusted, auth.now())
    if identity.is_system or "app" not in identity.usage or identity.route_to_app != app:
        raise AccessDenied(f"the certificate is not an app certificate for {app}: run lmsh "
                           f"apps login {app}")
    online = await _admitted(auth, identity, app, "app.session")
    return sign_app_jwt(auth.authorities.get(CertAuthorityType.JWT), identity, online.uri,
                        auth.now())
