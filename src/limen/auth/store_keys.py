"""Backend keys auth owns outside the resource store (one place to find them).

Imported by the auth server and its parts, the Git sync and ``lmctl``; imports nothing.
"""

__all__ = [
    "APP_PRESENCE_PREFIX", "CLUSTER_NAME_KEY", "DB_PRESENCE_PREFIX", "GITOPS_STATUS_KEY",
    "KUBE_PRESENCE_PREFIX",
    "PRESENCE_PREFIX",
    "PROXY_ADDRESS_KEY", "PROXY_PRESENCE_PREFIX",
]

CLUSTER_NAME_KEY = "/cluster/name"
"""The cluster's name, written by the first ``limen start``."""
PROXY_ADDRESS_KEY = "/cluster/proxy_public_address"
"""The public web address of the proxy (sign-up links are built from it)."""
GITOPS_STATUS_KEY = "/gitops/status"
"""The Git sync's status: live commit and last attempt (JSON, ``limen.gitops.status``)."""
PRESENCE_PREFIX = "/presence/nodes/"
"""Heartbeated presence records, one per host id (``limen.auth.presence``)."""
DB_PRESENCE_PREFIX = "/presence/dbs/"
"""Heartbeated databases, one record per (database name, serving db agent's host id)."""
KUBE_PRESENCE_PREFIX = "/presence/kubes/"
"""Heartbeated Kubernetes clusters, one record per (kube Resource name, serving kube agent)."""
APP_PRESENCE_PREFIX = "/presence/apps/"
"""Heartbeated web applications, one record per (app Resource name, serving app agent)."""
PROXY_PRESENCE_PREFIX = "/presence/proxies/"
"""Proxies announcing themselves and their tunnel address (``limen.auth.proxy_presence``)."""
