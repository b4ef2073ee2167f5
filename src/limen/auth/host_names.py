"""The names a joining host's certificates carry: decided by auth, never by the request.

A join request names the host (``hostname``, checked as one DNS-like label) and may propose its
saved host id; the ``addresses`` it sends are ignored. Auth puts in the certificates:

    X.509 SANs        <host id>, <hostname>.<cluster>      + for a proxy: its public names
    SSH principals    <host id>, <host id>.<cluster>,
                      <hostname>, <hostname>.<cluster>     + for a proxy: its public names

A proxy's public names are auth's configuration (:func:`configured_proxy_names`): the host of
``cluster.public_address`` and of the web, SSH-proxy, tunnel and database listeners (not
wildcards), ``auth.proxy_server_names`` (e.g. the proxies' Kubernetes Service, which the
operator's db agents join through), ``localhost``/``127.0.0.1``, and the kube front's name on
the web port (:data:`limen.net.kube_sni.KUBE_SERVER_NAME`, the SNI kubectl sends there, and
its wildcard :data:`~limen.net.kube_sni.KUBE_WILDCARD_NAME` for the server names naming a kube
cluster: an X.509 name only, never an SSH principal); a
proxy run apart from auth therefore needs its public address in auth's ``limen.yaml`` too (the
operator gives both the same file). A node token can never buy a certificate for the proxy's
name (or any name the joiner picks): a hostname whose names would be the proxy's is refused.

Called by ``limen.auth.core`` (joins), ``limen.auth.auth_service`` (the configured names) and
``limen.cli.compose`` / ``process_remote`` (the names a proxy asks for).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from limen.ca.identity import SystemRole
from limen.config import NODENAME_PATTERN, Settings
from limen.errors import BadParameter
from limen.net.address import is_ip_address
from limen.net.kube_sni import KUBE_SERVER_NAME, KUBE_WILDCARD_NAME

__all__ = [
    "HostNames",
    "check_host_id",
    "check_hostname",
    "configured_proxy_names",
    "joined_host_names",
    "local_host_names",
]

_LABEL = re.compile(NODENAME_PATTERN)
_RESERVED = frozenset({"localhost"})


@dataclass(frozen=True)
class HostNames:
    dns: tuple[str, ...]
    ips: tuple[str, ...]
    principals: tuple[str, ...]
    """SSH principals beyond the host id and hostname (which ``sign_host_cert`` adds)."""


def configured_proxy_names(settings: Settings) -> tuple[str, ...]:
    """The names auth certifies for a proxy (see the module doc). One function for both
    sides: auth reads it from its configuration, and a proxy (beside auth or apart from it)
    asks for the same names from its own (``limen.cli.compose``, ``process_remote``)."""
    names = {"localhost", "127.0.0.1", KUBE_SERVER_NAME, KUBE_WILDCARD_NAME}
    for address in (settings.cluster.public_address, settings.listeners.web,
                    settings.listeners.ssh_proxy, settings.listeners.tunnel,
                    settings.listeners.postgres, settings.listeners.mysql,
                    settings.listeners.kube):
        host = address.rpartition(":")[0].strip("[]") if address else ""
        if host and host not in ("0.0.0.0", "::"):  # noqa: S104 - a comparison, not a bind
            names.add(host)
    names.update(n for n in settings.auth.proxy_server_names if n)
    return tuple(sorted(names))


def check_hostname(hostname: str) -> str:
    """A joining host's name: one DNS-like label (no dots, so it is never an address or
    another domain's name), not ``localhost``."""
    if not _LABEL.fullmatch(hostname) or hostname.lower() in _RESERVED:
        raise BadParameter(f"invalid hostname {hostname[:64]!r}: one label of letters, digits, "
                           "'-' and '_' (at most 63), not localhost")
    return hostname


def check_host_id(host_id: str) -> str:
    """A proposed host id: a UUID in its canonical form (what auth and ``host_uuid`` make)."""
    try:
        parsed = uuid.UUID(host_id)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != host_id:
        raise BadParameter(f"invalid host id {host_id[:64]!r}: a UUID is expected")
    return host_id


def joined_host_names(role: SystemRole, host_id: str, hostname: str, cluster: str,
                      proxy_names: Sequence[str]) -> HostNames:
    """What a joined host's certificates name (see the module doc). A host other than a
    proxy whose name would be one of the proxy's (``proxy`` in a cluster named
    ``example.com`` whose proxy is ``proxy.example.com``) is refused."""
    if role is not SystemRole.PROXY:
        taken = {n.lower() for n in proxy_names}
        if hostname.lower() in taken or f"{hostname}.{cluster}".lower() in taken:
            raise BadParameter(f"hostname {hostname!r} would name the proxy "
                               f"({hostname}.{cluster}): choose another --nodename")
    public = tuple(proxy_names) if role is SystemRole.PROXY else ()
    ips = tuple(n for n in public if is_ip_address(n))
    dns = (host_id, f"{hostname}.{cluster}", *(n for n in public if not is_ip_address(n)))
    principals = tuple(n for n in public if "*" not in n)  # the kube wildcard is X.509's only
    return HostNames(dns=tuple(dict.fromkeys(dns)), ips=ips, principals=principals)


def local_host_names(host_id: str, hostname: str, addresses: Sequence[str]) -> HostNames:
    """What the certificates of a component in auth's own process name: its id, hostname and
    configured addresses, with ``localhost`` and ``127.0.0.1`` (it listens on this machine)."""
    dns = (host_id, hostname, "localhost", *(a for a in addresses if not is_ip_address(a)))
    return HostNames(dns=tuple(n for n in dns if n),
                     ips=("127.0.0.1", *(a for a in addresses if is_ip_address(a))),
                     principals=tuple(addresses))


