"""Auth's join listener: the one door into auth that asks for no client certificate::

    listeners.auth       HTTPS, the auth API: the TLS handshake fails without a client
                         certificate signed by the cluster's TLS CA
    listeners.auth_join  HTTPS (auth's own certificate), no client certificate asked, and
                         nothing but /v1/join (limen.auth.http.join) and the readiness
                         probe (limen.auth.http.readiness):
                           GET  /v1/join   cluster name and TLS CA, checked against the pin
                           POST /v1/join   a join with a token (64 KiB at most, audited)
                           GET  /v1/ready  200 or 503: does the backend answer? (the
                                           kubelet's readinessProbe; says nothing else)
                         any other path: 404; no admin, user or agent API is mounted here.
                         Default (empty): the auth listener's host, its port + 2 (3027).

Who uses it: a proxy run apart from auth, whose first join precedes any certificate of its
own (the static token of ``auth.proxy_token_file``). It finds the listener at ``--auth-join``
(``join.auth_join``), else at :func:`join_address_for` of ``--auth-server``: the documented
convention "auth's port + 2", which ``--random-ports`` keeps by binding the two listeners as
such a pair (:func:`bind_auth_listeners`). Every later call of that proxy goes to the auth
API with the certificate it got here. Nodes and other agents join through the proxy's web
port (``/v1/webapi/join``), which forwards to the auth API with the proxy's identity.

Called by ``limen.auth.auth_service`` (the listener) and ``limen.agents.joining`` (the address).
"""

from __future__ import annotations

import socket

from aiohttp import web

from limen.auth.core import AuthServer
from limen.auth.http.join import JOIN_MAX_BODY, JOIN_PATH, join, join_info
from limen.auth.http.readiness import BackendReadiness, readiness_routes
from limen.errors import BadParameter
from limen.net.address import bind_tcp, format_address, parse_address
from limen.net.http import error_middleware, json_body

__all__ = ["JOIN_PORT_OFFSET", "bind_auth_listeners", "build_join_app", "join_address_for"]

JOIN_PORT_OFFSET = 2
"""The join listener's port is the auth listener's plus this, unless configured (3025 and
3027: the port between is the proxy's Kubernetes front, 3026, in the single-node default)."""
_PAIR_ATTEMPTS = 64


def join_address_for(auth_address: str) -> str:
    """Where the join listener of the auth server at ``auth_address`` is, by convention."""
    host, port = parse_address(auth_address)
    if port == 0 or port + JOIN_PORT_OFFSET > 65535:
        raise BadParameter(f"no join listener can follow the auth address {auth_address}: "
                           "give its address with --auth-join HOST:PORT")
    return format_address(host, port + JOIN_PORT_OFFSET)


def bind_auth_listeners(auth: str, auth_join: str) -> tuple[socket.socket, socket.socket]:
    """The auth API's and the join listener's sockets. ``auth_join`` empty: at the auth
    port + ``JOIN_PORT_OFFSET`` (a free pair when the auth port is 0, as with
    ``--random-ports``)."""
    if auth_join:
        return _bind_both(auth, auth_join)
    host, port = parse_address(auth)
    if port != 0:
        return _bind_both(auth, join_address_for(auth))
    for _attempt in range(_PAIR_ATTEMPTS):
        api = bind_tcp(auth)
        bound = int(api.getsockname()[1])
        try:
            if bound + JOIN_PORT_OFFSET > 65535:
                raise BadParameter("no port after the last one")
            return api, bind_tcp(format_address(host, bound + JOIN_PORT_OFFSET))
        except BadParameter:
            api.close()
    raise BadParameter(f"found no free pair of ports on {host} for the auth API and its "
                       f"join listener (the auth port + {JOIN_PORT_OFFSET}): set "
                       "listeners.auth_join")


def _bind_both(auth: str, auth_join: str) -> tuple[socket.socket, socket.socket]:
    api = bind_tcp(auth)
    try:
        return api, bind_tcp(auth_join)
    except BaseException:
        api.close()
        raise


def build_join_app(auth: AuthServer) -> web.Application:
    """The join listener's app (see the module doc)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=JOIN_MAX_BODY)

    async def info(_request: web.Request) -> web.Response:
        return web.json_response(join_info(auth))

    async def post(request: web.Request) -> web.Response:
        body = await json_body(request, JOIN_MAX_BODY)
        return web.json_response(await join(auth, body, remote_addr=request.remote or ""))

    app.add_routes([web.get(JOIN_PATH, info), web.post(JOIN_PATH, post)])
    app.add_routes(readiness_routes(BackendReadiness(auth.backend, lambda: auth.cluster_name)))
    return app
