"""How a process without the auth role gets and keeps its identity::

    DATA_DIR/host/ holds credentials for this role and cluster, valid for another hour?
        yes ─▶ reuse them (a restart needs no token)
        no  ─▶ join with join.token:  node (and other agents) through the proxy's web API
                                       (join.proxy, CA pinned with join.ca_pin);
                                       proxy directly at auth's join listener (pinned:
                                       join.auth_join, default join.auth_server's port + 2)
               ─▶ save them (0700 directory, 0600 files)

A join proposes this host's saved id; when the saved credentials have not expired yet they
sign the request (``limen.auth.host_proof``): auth lets a host join again under a registered
id only with that proof. Auth decides the names in the certificates: a proxy whose public
names are missing from its certificate says so in the log (auth's ``cluster.public_address``).

:func:`tunnel_address` asks the proxy (TLS verified with the cluster CA from the credentials)
where its tunnel listener is: a listener bound to every interface (``0.0.0.0:3024``) is
reached on the host of the proxy address this agent was given. A proxy without a tunnel
listener names its web port (``tls://...``, :mod:`limen.net.tunnel_address`): the agent then
tunnels through the very address it was given (``--proxy``, the web port, perhaps a load
balancer's), with TLS routing. Called by
``limen.cli.compose`` for ``limen start --roles node`` and ``--roles proxy``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from limen.auth.host_proof import make_proof
from limen.auth.http.join_listener import join_address_for
from limen.auth.join_client import join_via_proxy, pinned_auth
from limen.ca.host_credentials import HostCredentials
from limen.ca.host_keys import new_host_key, new_ssh_host_key
from limen.ca.identity import SystemRole
from limen.ca.keys import private_key_to_pem, public_key_to_openssh
from limen.ca.peer_role import require_server_role
from limen.config import Settings
from limen.errors import BadParameter, LimenError
from limen.net.address import format_address, parse_address
from limen.net.http import ApiClient
from limen.net.tunnel_address import TLS_PREFIX, parse_tunnel_address

__all__ = ["RENEW_BEFORE", "credentials_dir", "load_or_join", "tunnel_address"]

log = logging.getLogger(__name__)

RENEW_BEFORE = timedelta(hours=1)
"""Saved credentials closer than this to expiry are replaced by joining again."""


def credentials_dir(data_dir: Path) -> Path:
    return data_dir / "host"


def hostname() -> str:
    return socket.gethostname().split(".")[0].lower()


async def load_or_join(settings: Settings, role: SystemRole, host_id: str,
                       addresses: Sequence[str] = ()) -> HostCredentials:
    """This process's credentials for ``role`` (see the module doc). A node joins under
    ``node.nodename`` (``--nodename``) when set; saved credentials of another name are not
    reused (the name is in the host certificate), so renaming a node takes a new token."""
    directory = credentials_dir(settings.data_dir)
    nodename = settings.node.nodename if role is not SystemRole.PROXY else ""
    saved = await asyncio.to_thread(_load_valid, directory, role)
    renamed = saved is not None and bool(nodename) and saved.hostname != nodename
    if saved is not None and not renamed:
        return saved
    join = settings.join
    if not join.token:
        if renamed:
            assert saved is not None
            raise BadParameter(f"the credentials in {directory} name this node "
                               f"{saved.hostname!r}, not {nodename!r}: give --token (and "
                               "--ca-pin) to join again under the new name")
        older = " or predate the proxy's Ed25519 SSH key" if role is SystemRole.PROXY else ""
        state = (f"expire within the hour{older}" if (directory / "meta.json").is_file()
                 else "are missing")
        raise BadParameter(f"the credentials in {directory} {state}: give --token (and "
                           "--ca-pin) to join the cluster")
    if not join.ca_pin:
        raise BadParameter("--ca-pin (join.ca_pin) is needed with --token: the sha256 pin "
                           "printed with the token by `lmctl tokens add`")
    current = await asyncio.to_thread(_load_unexpired, directory, role)
    if current is not None:
        host_id = current.host_id  # the id auth registered: proven with its certificate
    if role is SystemRole.PROXY:
        if not join.auth_server:
            raise BadParameter("a proxy started apart from auth needs --auth-server HOST:PORT")
        creds = await _join_auth(join.auth_join or join_address_for(join.auth_server),
                                 join.token, join.ca_pin, host_id, list(addresses), current)
        _warn_missing_names(creds, addresses)
    else:
        if not join.proxy:
            raise BadParameter(f"a {role.value} agent started apart from auth needs "
                               "--proxy HOST:PORT (the proxy's web address)")
        creds = await join_via_proxy(join.proxy, join.token, join.ca_pin, role=role.value,
                                     host_id=host_id, hostname=nodename or hostname(),
                                     addresses=list(addresses), current=current)
    await asyncio.to_thread(creds.save, directory)
    return creds


def _load_unexpired(directory: Path, role: SystemRole) -> HostCredentials | None:
    """Saved credentials of ``role`` whose certificate has not expired: the proof for
    joining again under their host id (``limen.auth.host_proof``)."""
    try:
        creds = HostCredentials.load(directory)
        cert = x509.load_pem_x509_certificate(creds.tls_cert_pem)
    except (LimenError, OSError, ValueError):
        return None
    if creds.role != role.value or cert.not_valid_after_utc <= datetime.now(UTC):
        return None
    return creds


def _warn_missing_names(creds: HostCredentials, wanted: Sequence[str]) -> None:
    """Auth decides a proxy's names from its own configuration: say which of this proxy's
    public names it did not certify (clients checking the name will refuse them)."""
    cert = x509.load_pem_x509_certificate(creds.tls_cert_pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return
    named = {str(n) for n in sans.get_values_for_type(x509.DNSName)} | \
        {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    missing = sorted(set(wanted) - named)
    if missing:
        log.warning("auth did not put %s in this proxy's certificate: clients reaching the "
                    "proxy by that name will refuse it; set cluster.public_address in auth's "
                    "configuration", ", ".join(missing))


def _load_valid(directory: Path, role: SystemRole) -> HostCredentials | None:
    if not (directory / "meta.json").is_file():
        return None
    try:
        creds = HostCredentials.load(directory)
        cert = x509.load_pem_x509_certificate(creds.tls_cert_pem)
    except (LimenError, OSError, ValueError):
        return None
    if creds.role != role.value:
        raise BadParameter(f"{directory} holds credentials of a {creds.role}, not of a "
                           f"{role.value}: use another --data-dir")
    if cert.not_valid_after_utc - RENEW_BEFORE < datetime.now(UTC):
        return None
    if role is SystemRole.PROXY and not creds.ssh_key_pem:
        return None  # saved before the proxy had an Ed25519 SSH host key: join again
    return creds


async def _join_auth(join_listener: str, token: str, ca_pin: str, host_id: str,
                     addresses: list[str], current: HostCredentials | None) -> HostCredentials:
    """A proxy's join at auth's join listener (no client certificate: it has none yet)."""
    context = await pinned_auth(join_listener, ca_pin)
    key = new_host_key(SystemRole.PROXY)  # P-256: its web listener's certificate
    ssh_key = new_ssh_host_key(SystemRole.PROXY)  # Ed25519: its SSH listeners
    public_key = public_key_to_openssh(key.public_key())
    body: dict[str, Any] = {"token": token, "role": SystemRole.PROXY.value,
                            "host_id": host_id, "hostname": hostname(),
                            "public_key": public_key, "addresses": addresses}
    if current is not None:
        body["proof"] = make_proof(current, SystemRole.PROXY, public_key, datetime.now(UTC))
    if ssh_key is not None:
        body["ssh_public_key"] = public_key_to_openssh(ssh_key.public_key())
    async with ApiClient(f"https://{join_listener}", context) as api:
        answer = await api.call("POST", "/v1/join", body)
    return HostCredentials(
        cluster=answer["cluster"], host_id=str(answer.get("host_id") or host_id),
        role=SystemRole.PROXY.value,
        hostname=hostname(), private_key_pem=private_key_to_pem(key).encode(),
        tls_cert_pem=answer["tls_cert"].encode(), tls_ca_pem=answer["tls_cas"].encode(),
        ssh_cert=answer["ssh_cert"].encode(),
        user_ca_keys=tuple(answer["user_ca_keys"]), host_ca_keys=tuple(answer["host_ca_keys"]),
        ssh_key_pem=private_key_to_pem(ssh_key).encode() if ssh_key else b"",
    )


async def tunnel_address(proxy: str, credentials: HostCredentials) -> str:
    """The proxy's tunnel listener as this agent reaches it."""
    context = ssl.create_default_context(cadata=credentials.tls_ca_pem.decode())
    context.check_hostname = False  # the proxy is verified by its identity, any name
    require_server_role(context, SystemRole.PROXY,
                        {credentials.cluster: credentials.tls_cas()})
    async with ApiClient(f"https://{proxy}", context) as api:
        ping: dict[str, Any] = await api.call("GET", "/v1/webapi/ping")
    if ping.get("cluster") not in (None, credentials.cluster):
        raise BadParameter(f"the proxy {proxy} serves cluster {ping.get('cluster')!r}, not "
                           f"{credentials.cluster!r}")
    listed = str(ping.get("tunnel") or "")
    if not listed:
        raise BadParameter(f"the proxy {proxy} does not announce a tunnel listener")
    if parse_tunnel_address(listed).tls:  # one port: the tunnel is where this agent is
        return TLS_PREFIX + format_address(*parse_address(proxy))
    host, port = parse_address(listed)
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - a wildcard bind, read, not bound
        host = parse_address(proxy)[0]
    return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
