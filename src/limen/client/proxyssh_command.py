"""What ``lmsh proxy ssh [--proxy HOST:PORT] [--cluster NAME] LOGIN@HOST:PORT`` does, without
click: OpenSSH runs it as ProxyCommand for every connection, so its start-up is the user's wait.

:func:`relay_ssh` resolves the profile and the target, then carries OpenSSH's bytes through one
TLS connection to the proxy's web port (``limen.client.proxyssh_tls``), or, for a proxy
without that route, inside an SSH connection to its SSH front (``limen.client.proxyssh``,
asyncssh: imported only then). :func:`parse_args` reads exactly the command line that
``lmsh config`` writes, so ``limen.cli.lmsh_entry`` can serve it before loading click.

Called by ``limen.cli.lmsh_entry`` (the fast path) and ``limen.cli.lmsh_proxy`` (the click
command, for every other spelling and ``--help``).
"""

from __future__ import annotations

from collections.abc import Sequence

from limen.client.profile import ProfileStore
from limen.errors import BadParameter

__all__ = ["parse_args", "relay_ssh"]


def parse_args(args: Sequence[str]) -> tuple[str | None, str | None, str] | None:
    """``(proxy, cluster, target)`` of ``[--proxy P] [--cluster C] TARGET`` (``--opt=value``
    too), or None for anything else (click's command then parses and explains it)."""
    options: dict[str, str] = {}
    rest: list[str] = []
    items = list(args)
    while items:
        item = items.pop(0)
        name, equals, value = item.partition("=")
        if name in ("--proxy", "--cluster") and name not in options:
            if not equals:
                if not items:
                    return None
                value = items.pop(0)
            options[name] = value
        elif item.startswith("-"):
            return None
        else:
            rest.append(item)
    if len(rest) != 1:
        return None
    return options.get("--proxy"), options.get("--cluster"), rest[0]


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
    from limen.client.proxyssh_tls import run_proxy_ssh_tls, strip_cluster
    from limen.net.address import parse_address
    from limen.net.ssh_tls_wire import SSHRouteRequest

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
