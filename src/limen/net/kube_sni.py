"""How a client names the proxy's Kubernetes front, and a kube cluster, by TLS server name.

kubectl cannot ask for a custom ALPN, but it sends the TLS server name its kubeconfig gives
(``tls-server-name``): a connection to the web port whose SNI is :data:`KUBE_SERVER_NAME` is
the kube front's (as Teleport's ``kube-teleport-proxy-alpn.`` names). The name is the same in
every cluster and is never resolved: kubectl only sends it and checks that the proxy's
certificate holds it, which auth puts in every proxy certificate
(:func:`limen.auth.host_names.configured_proxy_names`); the kubeconfig's CA is the cluster's
own, so another cluster's proxy is refused all the same. Clients Limen drives may ask for ALPN
:data:`ALPN_KUBE` instead.

A server name may also name one kube cluster of the proxy's own cluster (as Teleport's
hex-encoded kube cluster names once did): ``<hex of its UTF-8 name>.`` before
:data:`KUBE_SERVER_NAME` (:func:`kube_server_name`), e.g. ``656d75.kube-limen-proxy.limen.local``
for ``emu``. One DNS label holds at most 63 characters, so names of up to
:data:`MAX_SNI_NAME` bytes; longer ones are named in the path
(:mod:`limen.net.kube_path`). The proxy certificate holds the wildcard
:data:`KUBE_WILDCARD_NAME` for them. Such a name routes to that kube cluster on the web port
and on the kube listener (:mod:`limen.proxy.kube.kube_front`). Used by
:mod:`limen.proxy.kube.kube_front` (serves it), :mod:`limen.client.kube_access` (writes it)
and ``limen.auth.host_names``.
"""

from __future__ import annotations

from limen.errors import BadParameter

__all__ = ["ALPN_KUBE", "KUBE_SERVER_NAME", "KUBE_WILDCARD_NAME", "MAX_SNI_NAME",
           "kube_of_server_name", "kube_server_name"]

KUBE_SERVER_NAME = "kube-limen-proxy.limen.local"
KUBE_WILDCARD_NAME = f"*.{KUBE_SERVER_NAME}"
ALPN_KUBE = "limen-kube"
MAX_SNI_NAME = 31
"""The longest kube cluster name (bytes) a server name can carry: 62 hex digits."""
_SUFFIX = f".{KUBE_SERVER_NAME}"
_HEX = "0123456789abcdef"


def kube_server_name(kube: str) -> str:
    """The server name naming kube cluster ``kube`` (BadParameter when too long)."""
    raw = kube.encode()
    if not raw or len(raw) > MAX_SNI_NAME:
        raise BadParameter(f"a server name can name a kube cluster of 1 to {MAX_SNI_NAME} "
                           f"bytes, not {kube[:64]!r}: name it in the path")
    return raw.hex() + _SUFFIX


def kube_of_server_name(server_name: str) -> str | None:
    """The kube cluster ``server_name`` names; None for :data:`KUBE_SERVER_NAME` and for
    names outside it; BadParameter for a malformed name under it."""
    name = server_name.lower().rstrip(".")
    if not name.endswith(_SUFFIX):
        return None
    label = name[:-len(_SUFFIX)]
    if not label or len(label) > 2 * MAX_SNI_NAME or len(label) % 2 or \
            label.strip(_HEX):
        raise BadParameter(f"the server name {server_name[:80]!r} does not name a kube "
                           "cluster (hex of its name)")
    try:
        kube = bytes.fromhex(label).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadParameter(f"the server name {server_name[:80]!r} does not name a kube "
                           "cluster (hex of its name)") from None
    if any(ord(c) < 0x21 or c in "/\x7f" for c in kube):
        raise BadParameter(f"the server name {server_name[:80]!r} names an invalid kube "
                           "cluster")
    return kube
