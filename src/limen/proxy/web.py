"""The proxy's public web API (HTTPS, certificate from the cluster's TLS CA)::

    GET  /v1/webapi/ping     cluster name, TLS CA (PEM) and its pin, second factor, addresses
    POST /v1/webapi/signup/begin {token, password?}            → auth /v1/signup/begin
    POST /v1/webapi/signup   {token, password, otp}            → auth /v1/signup
    POST /v1/webapi/login    {user, password, otp | webauthn, public_key, ttl_seconds,
                             request_id?} → auth /v1/login
    POST /v1/webapi/login/webauthn/begin {user, password} → auth: a security key's challenge
    POST /v1/webapi/join     {token, role, host_id, hostname, public_key, addresses} → auth
    POST /v1/webapi/sso/oidc/NAME/start {public_key, port, ttl_seconds?}
                             → auth /v1/sso/oidc/NAME/start (the provider's authorization URL)
    POST /v1/webapi/sso/oidc/callback {state, code | error} → auth /v1/sso/oidc/callback
    POST /v1/webapi/sso/github/NAME/start, /v1/webapi/sso/github/callback  the same for a
                             GitHubConnector (auth /v1/sso/github/...)
    GET  /v1/webapi/sso/connectors → auth /v1/sso/connectors: name, kind and display of each
                             single sign-on connector (what lmsh and the login page offer)
    POST /v1/webapi/trustedclusters/validate  a leaf's handshake {token, leaf_cluster,
                             leaf_cas} → auth /v1/trustedclusters/validate
    GET  /v1/webapi/user/... calls made for a logged-in user (client certificate required;
                             nodes, recordings (the list, one by id), clusters = the
                             leaves the user may reach, databases, kube/clusters, apps,
                             requests (access requests: the list, one by id);
                             POST db/certs, kube/certs, apps/certs, requests, requests/ID/review,
                             requests/ID/certs; mfa = the user's second factors,
                             POST mfa/confirm/begin, mfa/register/begin, mfa/register,
                             mfa/remove):
                             forwarded to auth with the user's certificate (USER_CERT_HEADER);
                             auth re-verifies it and authorizes the user, not the proxy;
                             also events (the audit log, for roles with the event rules)
    /web, /v1/webapi/sessions, /v1/webapi/terminal, .../recordings/ID/cast
                             the web UI (``limen.proxy.webui``): a browser's calls to the
                             user routes carry its web session instead of a certificate

The proxy adds the caller's address and forwards with its own mutual-TLS identity; it holds no
secret of the user and never decides a login itself. Called by ``limen.proxy.proxy_service``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from limen.auth.client import AuthClient
from limen.errors import NotFound
from limen.events.emitter import Emitter
from limen.net.http import error_middleware, json_body
from limen.proxy.webui.mount import WebUI
from limen.proxy.webui.web_locks import WebLocks

__all__ = ["LEAF_LISTINGS", "USER_CERT", "LeafListing", "build_web_app"]

_MAX_BODY = 64 << 10
USER_CERT: web.AppKey[Callable[[web.Request], bytes]] = web.AppKey("user_cert")
"""The certificate (DER) a user call acts with: lmsh's client certificate, else the browser's
web session (application access creates app sessions with it)."""


USER_ROUTES = (
    ("/v1/webapi/user/nodes", "/v1/nodes"),
    ("/v1/webapi/user/recordings", "/v1/recordings"),
    ("/v1/webapi/user/recordings/{session_id}", "/v1/recordings/{session_id}"),
    ("/v1/webapi/user/clusters", "/v1/remoteclusters"),
    ("/v1/webapi/user/clusters/{name}/nodes", "/v1/remoteclusters/{name}/nodes"),
    ("/v1/webapi/user/databases", "/v1/db/databases"),
    ("/v1/webapi/user/kube/clusters", "/v1/kube/clusters"),
    ("/v1/webapi/user/apps", "/v1/apps"),
    ("/v1/webapi/user/requests", "/v1/requests"),
    ("/v1/webapi/user/requests/{request_id}", "/v1/requests/{request_id}"),
    ("/v1/webapi/user/events", "/v1/events"),
    ("/v1/webapi/user/mfa", "/v1/mfa"),
)
"""GET routes a logged-in user may call through the proxy, and their auth API paths."""
USER_POST_ROUTES = (
    ("/v1/webapi/user/db/certs", "/v1/db/certs"),
    ("/v1/webapi/user/kube/certs", "/v1/kube/certs"),
    ("/v1/webapi/user/apps/certs", "/v1/apps/certs"),
    ("/v1/webapi/user/requests", "/v1/requests"),
    ("/v1/webapi/user/requests/{request_id}/review", "/v1/requests/{request_id}/review"),
    ("/v1/webapi/user/requests/{request_id}/certs", "/v1/requests/{request_id}/certs"),
    ("/v1/webapi/user/mfa/confirm/begin", "/v1/mfa/confirm/begin"),
    ("/v1/webapi/user/mfa/register/begin", "/v1/mfa/register/begin"),
    ("/v1/webapi/user/mfa/register", "/v1/mfa/register"),
    ("/v1/webapi/user/mfa/remove", "/v1/mfa/remove"),
)
"""POST routes a logged-in user may call through the proxy (JSON body forwarded as is)."""


LeafListing = Callable[[str, str, bytes, str], Awaitable[list[dict[str, Any]]]]
"""``(kind db|kube, leaf, the user's certificate DER, remote address)`` -> what that trusted
leaf cluster lets the user reach (``limen.proxy.leaf_forward.LeafForwarder.listing``)."""
LEAF_LISTINGS = {"/v1/webapi/user/databases": "db", "/v1/webapi/user/kube/clusters": "kube"}
"""The listings that ``?cluster=LEAF`` sends to a leaf cluster (``lmsh db|kube ls
--cluster LEAF``)."""


def build_web_app(auth: AuthClient, ping_info: Callable[[], dict[str, Any]],
                  emitter: Emitter | None = None,
                  locks: WebLocks | None = None,
                  leaf_listing: LeafListing | None = None) -> web.Application:
    """``emitter``: where the web UI audits logouts (the proxy's); ``locks``: the web UI
    refuses locked users' web sessions with it; ``leaf_listing``: answers the listings of
    :data:`LEAF_LISTINGS` for a leaf cluster (without it they name this cluster only)."""
    webui = WebUI(auth, ping_info, emitter, locks)
    app = web.Application(middlewares=[*webui.outer_middlewares(), error_middleware,
                                       *webui.middlewares()],
                          client_max_size=_MAX_BODY)
    _client_cert = webui.user_cert
    app[USER_CERT] = webui.user_cert

    async def ping(_request: web.Request) -> web.Response:
        return web.json_response(ping_info())

    async def sso_connectors(_request: web.Request) -> web.Response:
        return web.json_response(await auth.call("GET", "/v1/sso/connectors"))

    def forward(path: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            body = await json_body(request, _MAX_BODY)
            body["remote_addr"] = request.remote or ""
            target = path.format(**{k: quote(v, safe="") for k, v in request.match_info.items()})
            return web.json_response(await auth.call("POST", target, body))

        return handler

    def for_user(auth_path: str, kind: str | None = None) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            cluster = request.query.get("cluster", "")
            if kind is not None and cluster and cluster != ping_info().get("cluster"):
                if leaf_listing is None:
                    raise NotFound(f"unknown cluster {cluster!r}: no such cluster is "
                                   "reachable here")
                items = await leaf_listing(kind, cluster, _client_cert(request),
                                           request.remote or "")
                return web.json_response({"items": items})
            path = auth_path.format(**request.match_info)
            answer = await auth.call("GET", path, params=dict(request.query),
                                     as_user_cert=_client_cert(request))
            return web.json_response(answer)

        return handler

    def post_for_user(auth_path: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            body = await json_body(request, _MAX_BODY)
            path = auth_path.format(**{k: quote(v, safe="") for k, v in
                                       request.match_info.items()})
            answer = await auth.call("POST", path, body, as_user_cert=_client_cert(request))
            return web.json_response(answer)

        return handler

    app.add_routes([web.get(route, for_user(target, LEAF_LISTINGS.get(route)))
                    for route, target in USER_ROUTES])
    app.add_routes([web.post(route, post_for_user(target))
                    for route, target in USER_POST_ROUTES])
    app.add_routes([
        web.get("/v1/webapi/ping", ping),
        web.post("/v1/webapi/signup", forward("/v1/signup")),
        web.post("/v1/webapi/signup/begin", forward("/v1/signup/begin")),
        web.post("/v1/webapi/login", forward("/v1/login")),
        web.post("/v1/webapi/login/webauthn/begin", forward("/v1/login/webauthn/begin")),
        web.post("/v1/webapi/join", forward("/v1/join")),
        web.post("/v1/webapi/sso/oidc/{name}/start", forward("/v1/sso/oidc/{name}/start")),
        web.post("/v1/webapi/sso/oidc/callback", forward("/v1/sso/oidc/callback")),
        web.post("/v1/webapi/sso/github/{name}/start", forward("/v1/sso/github/{name}/start")),
        web.post("/v1/webapi/sso/github/callback", forward("/v1/sso/github/callback")),
        web.get("/v1/webapi/sso/connectors", sso_connectors),
        web.post("/v1/webapi/trustedclusters/validate",
                 forward("/v1/trustedclusters/validate")),
    ])
    webui.mount(app)
    return app
