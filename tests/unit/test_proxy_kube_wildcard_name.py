"""A proxy's certificates name the kube front's per-cluster server names
(``*.kube-limen-proxy.limen.local``, so kubectl accepts ``<hex>.kube-limen-proxy.limen.local``)
as an X.509 DNS name only: never as an SSH principal (``limen.auth.host_names``)."""

from __future__ import annotations

from limen.auth.host_names import joined_host_names
from limen.ca.identity import SystemRole
from limen.net.kube_sni import KUBE_SERVER_NAME, KUBE_WILDCARD_NAME


def test_the_wildcard_is_an_x509_name_of_proxies_only() -> None:
    public = ("proxy.example.com", KUBE_SERVER_NAME, KUBE_WILDCARD_NAME, "127.0.0.1")
    names = joined_host_names(SystemRole.PROXY, "host-1", "proxy", "main", public)
    assert KUBE_WILDCARD_NAME in names.dns
    assert KUBE_SERVER_NAME in names.principals
    assert not [p for p in names.principals if "*" in p]
    node = joined_host_names(SystemRole.NODE, "host-2", "web", "main", public)
    assert KUBE_WILDCARD_NAME not in node.dns
