"""``lmsh proxy``: helpers for stock clients. ``lmsh proxy ssh`` is OpenSSH's ProxyCommand
(started for every ``ssh`` to a node, so it imports little: one TLS connection to the proxy's
web port, ``limen.client.proxyssh_tls``; asyncssh only for a proxy without that route);
``lmsh proxy db`` is a local database listener (``limen.cli.lmsh_db``).

Registered on the ``lmsh`` group by ``limen.cli.lmsh`` (loaded when it runs).
"""

from __future__ import annotations

import sys

import click

from limen.cli.common import handle_errors
from limen.cli.lazy_group import LazyGroup
from limen.client.profile import ProfileStore
from limen.errors import BadParameter

__all__ = ["proxy"]


@click.group(cls=LazyGroup, lazy_commands={"db": "limen.cli.lmsh_db:proxy_db"})
def proxy() -> None:
    """Helpers for stock clients: OpenSSH's ProxyCommand, a local database listener."""


@proxy.command("ssh")
@click.option("--proxy", "proxy_address", help="Proxy web address (default: current profile).")
@click.option("--cluster", help="Cluster of the target (default: the profile's).")
@click.argument("target")
@handle_errors
def proxy_ssh(proxy_address: str | None, cluster: str | None, target: str) -> None:
    """Relay stdin/stdout to LOGIN@HOST:PORT through the proxy (used as ProxyCommand)."""
    store = ProfileStore()
    profile = store.load(proxy_address) if proxy_address else store.current()
    login, _, host_port = target.rpartition("@")
    host, _, port = host_port.rpartition(":")
    if not login or not host or not port.isdigit():
        raise BadParameter("target must be LOGIN@HOST:PORT (OpenSSH's %r@%h:%p)")
    cluster = cluster or profile.cluster
    from limen.client.proxyssh_tls import run_proxy_ssh_tls, strip_cluster
    from limen.net.address import parse_address
    from limen.net.ssh_tls_wire import SSHRouteRequest

    ssh_cert = store.ssh_cert_path(profile.proxy, profile.user, profile.cluster)
    web_host, web_port = parse_address(profile.proxy)
    routed = run_proxy_ssh_tls(web_host, web_port, store, profile,
                               SSHRouteRequest(login=login, host=strip_cluster(host, cluster),
                                               port=int(port),
                                               cluster=cluster,
                                               ssh_cert=ssh_cert.read_text().strip()))
    if routed is not None:
        sys.exit(routed)  # non-zero: the proxy's reason was printed as "lmsh: <reason>"
    import asyncio

    from limen.client.proxyssh import run_proxy_ssh  # an older proxy: SSH inside SSH

    status = asyncio.run(run_proxy_ssh(
        ssh_proxy=profile.ssh_proxy, login=login, target_host=host, target_port=int(port),
        cluster=cluster, key_path=store.key_path(profile.proxy, profile.user),
        cert_path=store.ssh_cert_path(profile.proxy, profile.user, profile.cluster),
        known_hosts=store.known_hosts))
    sys.exit(status)  # non-zero: the proxy's reason was printed as "lmsh: <reason>"
