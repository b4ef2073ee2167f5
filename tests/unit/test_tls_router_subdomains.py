"""The web port's router picks an SNI route for its own name and, when the route serves
``subdomains``, for a name one label under it (the kube front's ``<hex>.kube-limen-proxy...``
names); two labels under it, another name, or a route without ``subdomains``: none (the web
context). ``limen.proxy.tls_router.TLSRouter.route_for``; a listener of one route
(``TLSRouter.single``, the kube listener) serves every name with its route."""

from __future__ import annotations

import asyncio
import ssl

from limen.proxy.tls_router import SNIRoute, TLSRouter


def _context() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)


def test_one_label_under_a_route_serving_subdomains() -> None:
    kube = SNIRoute(_context(), asyncio.Protocol, subdomains=True)
    other = SNIRoute(_context(), asyncio.Protocol)
    router = TLSRouter(_context(), asyncio.Protocol, {},
                       {"kube.example": kube, "other.example": other})
    assert router.route_for("kube.example") is kube
    assert router.route_for("KUBE.example") is kube
    assert router.route_for("656d75.kube.example") is kube
    assert router.route_for("a.b.kube.example") is None
    assert router.route_for("x.other.example") is None
    assert router.route_for("other.example") is other
    assert router.route_for("example") is None
    assert router.route_for("") is None


def test_a_single_route_listener_serves_every_name_and_keeps_its_alpn() -> None:
    context = _context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    only = SNIRoute(context, asyncio.Protocol)
    router = TLSRouter.single(only)
    assert router.context is context
    for name in ("", "anything.example", "656d75.kube.example"):
        assert router.route_for(name) is only
