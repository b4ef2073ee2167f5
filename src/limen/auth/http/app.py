"""The auth API: HTTPS with mutual TLS, JSON in and out, one handler per operation.

Only the proxy, agents (host certificates) and admins (admin identity) and users with matching
role ``rules`` may call it: the listener requires a client certificate of the cluster's TLS CA
in the TLS handshake (``limen.auth.auth_service``), and every request re-verifies it (identity,
cluster, expiry). A proxy run apart from auth joins at auth's separate join listener
(``limen.auth.http.join_listener``), never here without a certificate. Routes::

    GET  /v1/ping                          cluster name, TLS CA and its pin (any caller)
    POST /v1/login | /v1/signup[/begin] | /v1/join  forwarded by the proxy from its web API
                                           (the caller must be a proxy); /v1/signup/begin
                                           gives the TOTP enrolment that /v1/signup confirms
                                           with a code ({mfa: webauthn}: a security key's
                                           registration, confirmed with its answer);
                                           /v1/join: see limen.auth.http.join
    POST /v1/login/webauthn/begin, /v1/mfa[...]  security keys: a login's challenge, a
                                           user's second factors (see limen.auth.http.mfa)
    POST /v1/events | /v1/recordings/{id}  agents' audit events and recordings
                                           (see limen.auth.http.agents)
    POST /v1/resources/apply               {documents, origin, prune?} → per-object actions
    GET  /v1/resources/{kind}[/{name}]     DELETE /v1/resources/{kind}/{name}
    POST /v1/users                         {name, roles, logins} → sign-up link
    POST /v1/users/{name}/invite           → a fresh sign-up link
    POST /v1/tokens                        {type, ttl_seconds, labels, single_use?} → token
    GET  /v1/events?type=&user=&since=&limit=&order=  (order=newest: newest first, and
                                           limit keeps the newest)
    GET  /v1/access/check?user=&kind=&name=&login=  (kind node: a heartbeated node by
                                           hostname or host id)
    GET  /v1/status
    POST /v1/presence/heartbeat            {resource, host_id, cluster, tunnel} (proxies)
    POST /v1/presence/heartbeats           {tunnel, items: [{resource, host_id, cluster,
                                           role}]} → {errors: [null | why, ...]} (proxies)
    GET  /v1/presence/nodes                online agent-served nodes (see limen.auth.presence)
    GET  /v1/presence/dbs                  online databases, one item per serving db agent
    POST|GET /v1/presence/proxies          the proxy set (see limen.auth.http.proxies)
    GET  /v1/gitops/status                 the Git sync's live commit and last attempt
    POST /v1/trustedclusters/validate      a leaf's handshake, forwarded by the proxy
                                           (see limen.auth.trusted_clusters.root_handshake)
    /v1/remoteclusters[...]                leaves' status and nodes (see limen.auth.http.trust_root)
    /v1/db/...                             database listing and certificates
                                           (see limen.auth.http.db)
    /v1/kube/..., GET /v1/presence/kubes   kube cluster listing, certificates and presence
                                           (see limen.auth.http.kube)
    /v1/apps/..., GET /v1/presence/apps    app listing, certificates, identity tokens, JWKS and
                                           presence (see limen.auth.http.apps)
    POST /v1/authorities/{type}/rotate     a CA rotation phase change, admins only; and
    POST /v1/host/renew                    a host's renewed SSH host certificate
                                           (see limen.auth.http.rotation)
    GET  /v1/trust/roots                   the trusted roots, for agents and proxies apart from
                                           auth (see limen.auth.http.trust_leaf)
    /v1/admin/users|nodes|tokens[...]      lmctl users/nodes/tokens (see limen.auth.http.admin)
    GET  /v1/locks?after=&wait=            the locks in force, a long poll for agents apart from
                                           auth (see limen.auth.http.locks)
    /v1/requests[...]                      access requests: create, list, review, certificates
                                           with an approved one (see limen.auth.http.requests)
    GET /v1/sso/connectors, POST /v1/sso/oidc|github/{name}/start | .../callback
                                           single sign-on, forwarded by the proxy (see
                                           limen.auth.http.sso)

Called by ``limen.auth.auth_service`` (which serves it); ``limen.cli.admin_api`` (lmctl) and
``limen.auth.client`` are its clients.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin, parse_kind
from limen.api.secret_refs import refused_references
from limen.api.validation import validate
from limen.auth import presence
from limen.auth.client import USER_CERT_HEADER
from limen.auth.core import AuthServer
from limen.auth.http.admin import admin_routes
from limen.auth.http.agents import agent_routes
from limen.auth.http.apps import app_routes
from limen.auth.http.authz import require_rule, require_system
from limen.auth.http.db import db_routes
from limen.auth.http.fields import optional_str, required_str, str_list, ttl_seconds
from limen.auth.http.join import join, join_info
from limen.auth.http.kube import kube_routes
from limen.auth.http.locks import lock_routes
from limen.auth.http.mfa import key_answer, mfa_routes
from limen.auth.http.proxies import proxy_routes
from limen.auth.http.requests import login_answer, request_routes
from limen.auth.http.rotation import check_declared_rotation, rotation_routes
from limen.auth.http.sso import sso_routes
from limen.auth.http.trust_leaf import trust_routes
from limen.auth.http.trust_root import remote_routes
from limen.auth.http.user import user_routes
from limen.auth.node_admin import is_node_kind, resolve_node
from limen.auth.rotation_declared import declared_status
from limen.auth.sso.github import GitHubLogins
from limen.auth.sso.oidc import OIDCLogins
from limen.auth.store_keys import GITOPS_STATUS_KEY
from limen.auth.trusted_clusters.root_handshake import validate_trusted_cluster
from limen.auth.trusted_clusters.wire import ValidateRequest
from limen.ca.authority import CertAuthorityType, tls_trust_map
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PublicKey
from limen.ca.x509_certs import load_certificate, verify_client_cert
from limen.errors import AccessDenied, BadParameter, NotFound, ValidationFailed
from limen.events.search import parse_since, search_log
from limen.net.http import error_middleware, json_body
from limen.recording.sink import recordings_dir

__all__ = ["GITOPS_STATUS_KEY", "build_app"]



def build_app(auth: AuthServer, data_dir: Path) -> web.Application:
    """The auth API app; ``data_dir`` holds the audit log and the session recordings."""
    events_dir = data_dir / "log" / "events"
    app = web.Application(middlewares=[error_middleware], client_max_size=16 << 20)
    routes = _Routes(auth, events_dir)
    app.add_routes([
        web.get("/v1/ping", routes.ping),
        web.get("/v1/status", routes.status),
        web.get("/v1/authorities/{type}", routes.export_ca),
        web.post("/v1/login", routes.login),
        web.post("/v1/signup", routes.signup),
        web.post("/v1/signup/begin", routes.signup_begin),
        web.post("/v1/join", routes.join),
        web.post("/v1/resources/apply", routes.apply),
        web.get("/v1/resources/{kind}", routes.list_resources),
        web.get("/v1/resources/{kind}/{name}", routes.get_resource),
        web.delete("/v1/resources/{kind}/{name}", routes.delete_resource),
        web.post("/v1/users", routes.add_user),
        web.post("/v1/users/{name}/invite", routes.invite),
        web.post("/v1/tokens", routes.add_token),
        web.get("/v1/events", routes.events),
        web.get("/v1/access/check", routes.access_check),
        web.get("/v1/gitops/status", routes.gitops_status),
        web.post("/v1/presence/heartbeat", routes.presence_heartbeat),
        web.post("/v1/presence/heartbeats", routes.presence_heartbeats),
        web.get("/v1/presence/nodes", routes.presence_nodes),
        web.get("/v1/presence/dbs", routes.presence_dbs),
        web.post("/v1/trustedclusters/validate", routes.validate_trusted_cluster),
    ])
    app.add_routes(user_routes(auth, routes.identity, routes.role_set, recordings_dir(data_dir)))
    app.add_routes(agent_routes(auth, routes.identity, recordings_dir(data_dir)))
    app.add_routes(db_routes(auth, routes.identity, forwarded_public_key, routes.role_set))
    app.add_routes(kube_routes(auth, routes.identity, forwarded_public_key, routes.role_set))
    app.add_routes(app_routes(auth, routes.identity, forwarded_public_key, routes.role_set))
    app.add_routes(remote_routes(auth, routes.identity, routes.role_set))
    app.add_routes(proxy_routes(auth, routes.identity))
    app.add_routes(lock_routes(auth, routes.identity))
    app.add_routes(trust_routes(auth, routes.identity))
    app.add_routes(rotation_routes(auth, routes.identity))
    app.add_routes(admin_routes(auth, routes.identity, routes.role_set))
    app.add_routes(request_routes(auth, routes.identity, forwarded_public_key))
    app.add_routes(mfa_routes(auth, routes.identity))
    oidc = OIDCLogins(auth, auth.secret_resolver)
    github = GitHubLogins(auth, auth.secret_resolver)
    app.add_routes(sso_routes(auth, {"oidc": oidc, "github": github}, routes.identity))

    async def close_sso(_app: web.Application) -> None:
        await oidc.close()
        await github.close()

    app.on_cleanup.append(close_sso)
    return app


_RESOURCE_AGENTS = (SystemRole.DB, SystemRole.KUBE, SystemRole.APP)
"""Agents that list Resources (what their selectors serve) and read Roles (RBAC each time)."""

class _Routes:
    def __init__(self, auth: AuthServer, events_dir: Path) -> None:
        self.auth = auth
        self.events_dir = events_dir

    async def identity(self, request: web.Request) -> Identity:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        der = ssl_object.getpeercert(binary_form=True) if isinstance(
            ssl_object, ssl.SSLObject) else None
        if not der:
            raise AccessDenied("the auth API needs a client certificate")
        trusted = tls_trust_map(
            [ca for ca in (await self.auth.authorities.trusted(CertAuthorityType.TLS)).values()
             if ca.cluster == self.auth.cluster_name])
        caller = _unrestricted(verify_client_cert(der, trusted, self.auth.now()))
        delegated = request.headers.get(USER_CERT_HEADER)
        if delegated is None:
            return caller
        # The proxy verified the user's key possession in its own TLS handshake; we check the
        # certificate itself again (CA, cluster, expiry) and act as that user, never as proxy.
        if caller.system_role is not SystemRole.PROXY:
            raise AccessDenied("only a proxy may forward a user's certificate")
        user = _unrestricted(verify_client_cert(_unpack_cert(delegated), trusted,
                                                self.auth.now()))
        if user.is_system:
            raise AccessDenied("a forwarded certificate must be a user's")
        return user

    async def _actor(self, request: web.Request) -> tuple[Identity, str]:
        identity = await self.identity(request)
        return identity, identity.username

    async def ping(self, request: web.Request) -> web.Response:
        """For any client of the listener (which holds a certificate of this cluster); a
        joining proxy reads the same from the join listener (``limen.auth.http.join``)."""
        return web.json_response(join_info(self.auth))

    async def export_ca(self, request: web.Request) -> web.Response:
        await self.identity(request)  # public keys: any valid identity of this cluster
        try:
            ca_type = CertAuthorityType(request.match_info["type"])
        except ValueError:
            raise BadParameter(f"unknown CA type {request.match_info['type']!r}") from None
        return web.json_response(self.auth.export_ca(ca_type))

    async def status(self, request: web.Request) -> web.Response:
        await self.identity(request)
        status = self.auth.status()
        if status.get("cluster"):  # the rotation requests of the Cluster document, and why
            status["ca_rotation_requests"] = await declared_status(self.auth)
        return web.json_response(status)

    async def login(self, request: web.Request) -> web.Response:
        require_system(await self.identity(request), [SystemRole.PROXY])
        body = await json_body(request)
        ttl = body.get("ttl_seconds")
        if ttl is not None and (not isinstance(ttl, int) or ttl <= 0):
            raise BadParameter("ttl_seconds must be a positive integer")
        result = await self.auth.login(
            required_str(body, "user"), required_str(body, "password"), body.get("otp") or None,
            required_str(body, "public_key"), timedelta(seconds=ttl) if ttl else None,
            remote_addr=str(body.get("remote_addr", "")),
            request_id=optional_str(body, "request_id") or None,
            webauthn=key_answer(body),
        )
        return web.json_response(login_answer(result))

    async def signup(self, request: web.Request) -> web.Response:
        require_system(await self.identity(request), [SystemRole.PROXY])
        body = await json_body(request)
        return web.json_response(await self.auth.signup(
            required_str(body, "token"), required_str(body, "password"),
            optional_str(body, "otp"), key_answer(body),
            optional_str(body, "key_name") or "key"))

    async def signup_begin(self, request: web.Request) -> web.Response:
        require_system(await self.identity(request), [SystemRole.PROXY])
        body = await json_body(request)
        return web.json_response(await self.auth.signup_begin(
            required_str(body, "token"), optional_str(body, "password"),
            optional_str(body, "mfa") or "otp"))

    async def join(self, request: web.Request) -> web.Response:
        """A join forwarded by a proxy from its web API (the token authenticates the joiner;
        ``limen.auth.http.join``); a proxy's first join uses the join listener instead."""
        require_system(await self.identity(request), [SystemRole.PROXY])
        body = await json_body(request)
        return web.json_response(await join(self.auth, body,
                                             remote_addr=str(body.get("remote_addr", ""))))

    async def apply(self, request: web.Request) -> web.Response:
        identity, actor = await self._actor(request)
        body = await json_body(request)
        docs = body.get("documents")
        if not isinstance(docs, list):
            raise BadParameter("documents must be a list")
        origin = Origin(body.get("origin", "api")) if body.get("origin", "api") in {
            o.value for o in Origin} else None
        if origin is None:
            raise BadParameter("origin must be git, kubernetes or api")
        if origin is not Origin.API:
            require_system(identity, [])
        sources = [_source_document(i, d) for i, d in enumerate(docs)]
        try:
            resources = validate(sources)
        except ValidationFailed as failed:  # a secret reference outside the configured places
            for refused in refused_references(failed):
                await self.auth.emit("access.denied", user=actor, action="resources.apply",
                                     reason=str(refused))
            raise
        await check_declared_rotation(self.auth, identity, actor, resources)
        role_set = await self.role_set(identity)
        for kind in {r.kind for r in resources}:
            require_rule(identity, role_set, kind, "create")
            require_rule(identity, role_set, kind, "update")
        plan = await self.auth.apply(resources, origin, actor=actor,
                                     prune=bool(body.get("prune", False)))
        return web.json_response({"results": [
            {"kind": e.kind.value, "name": e.name, "action": e.action.value}
            for e in plan.entries]})

    async def role_set(self, identity: Identity) -> Any:
        return None if identity.is_system else await self.auth.role_set(identity)

    async def list_resources(self, request: web.Request) -> web.Response:
        identity = await self.identity(request)
        kind = parse_kind(request.match_info["kind"])
        # db, kube and app agents list Resources (what their selectors serve), nothing else
        require_rule(identity, await self.role_set(identity), kind, "list",
                     system=[SystemRole.PROXY, SystemRole.NODE,
                             *(_RESOURCE_AGENTS if kind is Kind.RESOURCE else [])])
        items = await self.auth.store.list(kind)
        return web.json_response({"items": [r.to_document() for r in items]})

    async def get_resource(self, request: web.Request) -> web.Response:
        identity = await self.identity(request)
        kind = parse_kind(request.match_info["kind"])
        # db, kube and app agents read roles (RBAC on every session or request), nothing else
        require_rule(identity, await self.role_set(identity), kind, "read",
                     system=[SystemRole.PROXY, SystemRole.NODE,
                             *(_RESOURCE_AGENTS if kind is Kind.ROLE else [])])
        found = await self.auth.store.get(kind, request.match_info["name"])
        return web.json_response(found.to_document())

    async def delete_resource(self, request: web.Request) -> web.Response:
        identity, actor = await self._actor(request)
        kind = parse_kind(request.match_info["kind"])
        require_rule(identity, await self.role_set(identity), kind, "delete")
        origin = Origin(request.query.get("origin", "api"))
        if origin is not Origin.API:
            require_system(identity, [])
        await self.auth.remove(kind, request.match_info["name"], origin, actor=actor)
        return web.json_response({"deleted": f"{kind.value}/{request.match_info['name']}"})

    async def add_user(self, request: web.Request) -> web.Response:
        identity, actor = await self._actor(request)
        require_rule(identity, await self.role_set(identity), Kind.USER, "create")
        body = await json_body(request)
        roles = str_list(body, "roles")
        if not roles:
            raise BadParameter("a user needs at least one role (--roles)")
        _user, url = await self.auth.add_user(required_str(body, "name"), roles,
                                              str_list(body, "logins"), actor=actor,
                                              ttl_seconds=ttl_seconds(body))
        return web.json_response({"url": url, "token": url.rsplit("/", 1)[-1].split("?")[0]})

    async def invite(self, request: web.Request) -> web.Response:
        identity, actor = await self._actor(request)
        require_rule(identity, await self.role_set(identity), Kind.USER, "update")
        url = await self.auth.invite(request.match_info["name"], actor=actor,
                                     ttl_seconds=ttl_seconds(await json_body(request)))
        return web.json_response({"url": url, "token": url.rsplit("/", 1)[-1].split("?")[0]})

    async def add_token(self, request: web.Request) -> web.Response:
        identity, actor = await self._actor(request)
        require_rule(identity, await self.role_set(identity), "token", "create")
        body = await json_body(request)
        ttl = body.get("ttl_seconds", 1800)
        if not isinstance(ttl, int):
            raise BadParameter("ttl_seconds must be an integer")
        labels = body.get("labels") or {}
        if not isinstance(labels, dict):
            raise BadParameter("labels must be a mapping")
        secret, record = await self.auth.create_token(
            required_str(body, "type"), timedelta(seconds=ttl), actor=actor,
            labels={str(k): str(v) for k, v in labels.items()},
            single_use=body.get("single_use"))
        return web.json_response(await self.auth.token_answer(secret, record))

    async def events(self, request: web.Request) -> web.Response:
        identity = await self.identity(request)
        require_rule(identity, await self.role_set(identity), "event", "list")
        query = request.query
        since = parse_since(query["since"]) if query.get("since") else None
        limit = int(query["limit"]) if query.get("limit", "").isdigit() else None
        found = await search_log(self.auth.emitter, self.events_dir,
                                 types=query.getall("type", []) or None,
                                 user=query.get("user") or None, since=since, limit=limit,
                                 descending=query.get("order") == "newest")
        return web.json_response({"events": found})

    async def access_check(self, request: web.Request) -> web.Response:
        identity = await self.identity(request)
        require_rule(identity, await self.role_set(identity), Kind.ROLE, "read")
        query = request.query
        login = query.get("login") or None
        if is_node_kind(query.get("kind", "")):  # a heartbeated node, by hostname or host id
            user = await self.auth.store.get(Kind.USER, query.get("user", ""))
            target = await resolve_node(self.auth, query.get("name", ""))
            return web.json_response(await self.auth.access_check_target(user, target, login))
        return web.json_response(await self.auth.access_check(
            query.get("user", ""), parse_kind(query.get("kind", "")), query.get("name", ""),
            login))

    async def gitops_status(self, request: web.Request) -> web.Response:
        identity = await self.identity(request)
        require_rule(identity, await self.role_set(identity), Kind.ROLE, "read")
        item = await self.auth.backend.get(GITOPS_STATUS_KEY)
        if item is None:
            raise NotFound("this cluster does not sync from Git (start it with --gitops)")
        status = json.loads(item.value)  # and what became of the declared CA rotations
        status["rotation_requests"] = await declared_status(self.auth)
        return web.json_response(status)

    # -- presence: agents' heartbeats relayed by the proxy (limen.auth.presence) ------------
    async def presence_heartbeat(self, request: web.Request) -> web.Response:
        require_system(await self.identity(request), [SystemRole.PROXY])
        body = await json_body(request)
        resource = body.get("resource")
        if not isinstance(resource, dict):
            raise BadParameter("resource must be a Resource document")
        record = await presence.heartbeat(
            self.auth, resource, required_str(body, "host_id"), required_str(body, "tunnel"),
            required_str(body, "cluster"), optional_str(body, "role") or "node")
        return web.json_response(record)

    async def presence_heartbeats(self, request: web.Request) -> web.Response:
        require_system(await self.identity(request), [SystemRole.PROXY])
        body = await json_body(request)
        items = body.get("items")
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise BadParameter("items must be a list of heartbeats")
        errors = await presence.heartbeats(self.auth, required_str(body, "tunnel"), items)
        return web.json_response({"errors": errors})

    async def presence_nodes(self, request: web.Request) -> web.Response:
        identity = await self.identity(request)
        require_rule(identity, await self.role_set(identity), Kind.RESOURCE, "list",
                     system=[SystemRole.PROXY, SystemRole.NODE])
        return web.json_response({"items": await presence.presence(self.auth)})

    async def presence_dbs(self, request: web.Request) -> web.Response:
        identity = await self.identity(request)
        require_rule(identity, await self.role_set(identity), Kind.RESOURCE, "list",
                     system=[SystemRole.PROXY, SystemRole.DB])
        return web.json_response(
            {"items": await presence.presence(self.auth, presence.DB_PRESENCE_PREFIX)})

    # -- trusted clusters: a leaf's handshake, authenticated by its token -------------------
    async def validate_trusted_cluster(self, request: web.Request) -> web.Response:
        require_system(await self.identity(request), [SystemRole.PROXY])
        body = await json_body(request)
        answer = await validate_trusted_cluster(self.auth, ValidateRequest.from_json(body),
                                                remote_addr=str(body.get("remote_addr", "")))
        return web.json_response(answer.to_json())


def _unrestricted(identity: Identity) -> Identity:
    """AccessDenied for a certificate restricted to some use (``usage``: a database
    certificate of ``lmsh db login``), which is no login for the API."""
    if identity.usage:
        raise AccessDenied(f"this certificate is restricted to {', '.join(identity.usage)}: "
                           "the auth API takes your login certificate (lmsh login)")
    return identity


def forwarded_public_key(request: web.Request) -> PublicKey:
    """The public key of the user certificate a proxy forwarded (the request's identity was
    verified from it); AccessDenied when the caller forwarded none."""
    delegated = request.headers.get(USER_CERT_HEADER)
    if delegated is None:
        raise AccessDenied("this call needs a user's certificate, forwarded by the proxy")
    key = load_certificate(_unpack_cert(delegated)).public_key()
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise AccessDenied("unsupported key type in the forwarded certificate")
    return key


def _unpack_cert(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise AccessDenied("malformed forwarded certificate") from None


def _source_document(index: int, entry: Any) -> SourceDocument:
    """``{source, index, line, document}`` as lmctl sends it, or a bare document."""
    if isinstance(entry, dict) and isinstance(entry.get("document"), dict):
        return SourceDocument(str(entry.get("source", "<api>")), int(entry.get("index", index)),
                              int(entry.get("line", 1)), entry["document"])
    if not isinstance(entry, dict):
        raise BadParameter(f"document {index} is not a mapping")
    return SourceDocument("<api>", index, 1, entry)




