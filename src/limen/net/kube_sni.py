"""How a client names the proxy's Kubernetes front on the proxy's web port (single-port mode).

kubectl cannot ask for a custom ALPN, but it sends the TLS server name its kubeconfig gives
(``tls-server-name``): a connection to the web port whose SNI is :data:`KUBE_SERVER_NAME` is
the kube front's (as Teleport's ``kube-teleport-proxy-alpn.`` names). The name is the same in
every cluster and is never resolved: kubectl only sends it and checks that the proxy's
certificate holds it, which auth puts in every proxy certificate
(:func:`limen.auth.host_names.configured_proxy_names`); the kubeconfig's CA is the cluster's
own, so another cluster's proxy is refused all the same. Clients Limen drives may ask for ALPN
:data:`ALPN_KUBE` instead. Used by :mod:`limen.proxy.kube.kube_front` (serves it),
:mod:`limen.client.kube_access` (writes it) and ``limen.auth.host_names``.
"""

from __future__ import annotations

__all__ = ["ALPN_KUBE", "KUBE_SERVER_NAME"]

KUBE_SERVER_NAME = "kube-limen-proxy.limen.local"
ALPN_KUBE = "limen-kube"
