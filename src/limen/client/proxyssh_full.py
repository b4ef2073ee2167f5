"""``lmsh proxy ssh`` in full: everything the ProxyCommand's fast path
(``limen.client.proxyssh_command.serve``) hands over, and the click command's work.

:func:`relay_ssh` reads the profile with ``ProfileStore`` (block-YAML profiles of earlier
versions too), checks the target and the certificates' expiry, and opens the TLS route
(``limen.client.proxyssh_tls``) with the context of ``limen.client.proxyssh_fast_tls`` or,
where that cannot serve (a key type other than Ed25519, a certificate with only the legacy
identity extension), ``limen.client.profile_tls`` with ``limen.ca``'s checks; a proxy without the
route is reached inside an SSH connection to its SSH front (``limen.client.proxyssh``,
asyncssh). A refusal is printed as ``lmsh: <reason>`` with exit status 1.

Called by ``limen.client.proxyssh_command.handover`` and ``limen.cli.lmsh_proxy``.
"""

from __future__ import annotations

import ssl
import sys

from limen.client.profile import Profile, ProfileStore
from limen.client.proxyssh_fast_tls import Unsupported, check_proxy_cert, fast_context
from limen.client.proxyssh_tls import (
    RouteRefused,
    open_route,
    relay_stdio,
    stdin_fd,
    strip_cluster,
)
from limen.errors import AccessDenied, BadParameter
from limen.net.address import parse_address
from limen.net.ssh_tls_wire import SSHRouteRequest

__all__ = ["relay_ssh", "run_proxy_ssh_tls"]


def relay_ssh(proxy_address: str | None, cluster: str | None, target: str) -> int:
    """Relay stdin/stdout to ``target`` (``LOGIN@HOST:PORT``) through the proxy; the exit
    status (non-zero: the proxy's reason was printed as ``lmsh: <reason>``)."""
    store = ProfileStore()
    profile = store.load(proxy_address) if proxy_address else store.current()
    login, _, host_port = target.rpartition("@")
    host, _, port = host_port.rpartition(":")
    if not login or not host or not port.isdigit():
        raise BadParameter("target must be LOGIN@HOST:PORT (OpenSSH's %r@%h:%p)")
    cluster = cluster or profile.cluster
    ssh_cert = store.ssh_cert_path(profile.proxy, profile.user, profile.cluster)
    web_host, web_port = parse_address(profile.proxy)
    routed = run_proxy_ssh_tls(web_host, web_port, store, profile,
                               SSHRouteRequest(login=login, host=strip_cluster(host, cluster),
                                               port=int(port), cluster=cluster,
                                               ssh_cert=ssh_cert.read_text().strip()))
    if routed is not None:
        return routed
    import asyncio

    from limen.client.proxyssh import run_proxy_ssh  # an older proxy: SSH inside SSH

    return asyncio.run(run_proxy_ssh(
        ssh_proxy=profile.ssh_proxy, login=login, target_host=host, target_port=int(port),
        cluster=cluster, key_path=store.key_path(profile.proxy, profile.user),
        cert_path=ssh_cert, known_hosts=store.known_hosts))


def _open(host: str, port: int, store: ProfileStore, profile: Profile,
          request: SSHRouteRequest) -> tuple[ssl.SSLSocket, bytes] | None:
    """:func:`open_route` with the fast context, or the full one where it cannot serve."""
    if not profile.is_valid():
        raise AccessDenied(f"your certificates expired at {profile.expires}: "
                           "run lmsh login again")
    try:
        context = fast_context(store.tls_cert_path(profile.proxy, profile.user).read_bytes(),
                               store.key_path(profile.proxy, profile.user).read_bytes(),
                               str(store.ca_path(profile.proxy, profile.cluster)))
        return open_route(host, port, context, request,
                          check=lambda der: check_proxy_cert(der, profile.cluster))
    except (Unsupported, FileNotFoundError):
        from limen.client.profile_tls import profile_context

        return open_route(host, port, profile_context(store, profile), request)


def run_proxy_ssh_tls(host: str, port: int, store: ProfileStore, profile: Profile,
                      request: SSHRouteRequest) -> int | None:
    """Relay stdin/stdout to the target; 0 at the end, 1 after printing the proxy's refusal,
    ``None`` when the proxy does not serve the route (the caller falls back)."""
    in_fd = stdin_fd()
    try:
        opened = _open(host, port, store, profile, request)
    except RouteRefused as err:
        print(f"lmsh: {err}", file=sys.stderr, flush=True)
        return 1
    if opened is None:
        return None
    relay_stdio(*opened, in_fd)
    return 0
