"""Runs the auth server in ``limen start``: CAs, the auth API listener (a client certificate
of the cluster's TLS CA required in the TLS handshake), the join listener beside it (no client
certificate, ``/v1/join`` only: ``limen.auth.http.join_listener``), the audit log, and the admin
identity that ``lmctl --data-dir`` uses. Listeners: ``auth`` and ``auth_join``.

Files in DATA_DIR written here (directories 0700, files 0600)::

    host_uuid            this process's stable host id
    admin/               admin identity (key.pem, tls.crt, cas.pem, meta.json), renewed each start
    log/events/          the audit log (JSON lines, one file per day)

With ``backend.type: postgres`` several auth processes (replicas) serve one cluster from one
database, each with its own DATA_DIR; the CA private keys are kept there encrypted with the
key of ``backend.ca_key_file`` (``limen.auth.ca_sealing``), which every replica is given.

At every start the missing preset roles are created (``limen.auth.preset_roles``), this process's
host id is reserved against joiners (``limen.auth.host_registry``) and the names a joining
proxy's certificates get are read from the configuration (``limen.auth.host_names``).

Called by the daemon (``limen.cli.compose``).
"""

from __future__ import annotations

import socket
import uuid
from datetime import timedelta
from pathlib import Path

from aiohttp import web

from limen.auth.ca_key_file import ca_sealer_for
from limen.auth.ca_sealing import CASealer
from limen.auth.core import AuthServer
from limen.auth.host_names import configured_proxy_names
from limen.auth.host_registry import register_local_host
from limen.auth.http.app import build_app
from limen.auth.http.join_listener import bind_auth_listeners, build_join_app
from limen.auth.preset_roles import ensure_presets
from limen.auth.rotation_service import RotationService
from limen.backend.base import Backend
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.host_keys import new_host_key, new_ssh_host_key
from limen.ca.identity import SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.config import Settings
from limen.errors import BadParameter
from limen.events.emitter import Emitter
from limen.files import write_private
from limen.net.address import parse_address, socket_address
from limen.services.lock_sweep import LockSweep

__all__ = ["AuthService", "host_uuid"]

ADMIN_CERT_TTL = timedelta(days=30)


def host_uuid(data_dir: Path) -> str:
    path = data_dir / "host_uuid"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    value = str(uuid.uuid4())
    write_private(path, value + "\n")
    return value


def _read_token(path: str, setting: str = "proxy_token_file", what: str = "proxy") -> str:
    """The static token in ``path`` (``auth.<setting>``); empty when no file is configured."""
    if not path:
        return ""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as err:
        raise BadParameter(f"cannot read auth.{setting} {path}: {err.strerror}") from None
    if len(token) < 32:
        raise BadParameter(f"the {what} token in {path} is too short (32 characters at least)")
    return token


class AuthService:
    name = "auth"

    def __init__(self, settings: Settings, backend: Backend, emitter: Emitter, *,
                 ca_sealer: CASealer | None = None) -> None:
        """``ca_sealer``: what encrypts the CA private keys in ``backend``; by default the
        key of ``backend.ca_key_file`` (``limen.auth.ca_key_file``: required, and refused
        when missing or loose, with a PostgreSQL backend)."""
        self.settings = settings
        self.server = AuthServer(backend, settings.cluster, emitter,
                                 ca_sealer=ca_sealer or ca_sealer_for(settings.backend))
        self.lock_sweep = LockSweep(self.server.store, self.server.emit)
        """Deletes expired locks (``limen.services.lock_sweep``)."""
        self.rotation = RotationService(self.server)
        """Follows CA rotations (``limen.auth.rotation_service``)."""
        self._runner: web.AppRunner | None = None
        self._join_runner: web.AppRunner | None = None
        self.address = ""
        self.join_address = ""

    def issue_local_credentials(self, role: SystemRole, addresses: list[str], *,
                                hostname: str = "", host_id: str = "") -> HostCredentials:
        """Credentials for a component running in this process (no join token needed);
        ``hostname``: the name it goes by (default: the machine's); ``host_id``: its tunnel
        identity when it is not the process's (two agents in one process, node and db)."""
        key = new_host_key(role)  # P-256 for the proxy: its web listener's certificate
        ssh_key = new_ssh_host_key(role)  # and Ed25519 for its SSH listeners
        host_id = host_id or host_uuid(self.settings.data_dir)
        hostname = hostname or socket.gethostname()
        certs = self.server.issue_host_certs(
            host_id, hostname, role, public_key_to_openssh(key.public_key()), addresses,
            ssh_public_key=public_key_to_openssh(ssh_key.public_key()) if ssh_key else "")
        return HostCredentials(
            cluster=self.server.cluster_name, host_id=host_id, role=role.value,
            hostname=hostname, private_key_pem=private_key_to_pem(key).encode(),
            tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode(),
            ssh_cert=certs.ssh_cert, user_ca_keys=tuple(certs.user_ca_keys),
            host_ca_keys=tuple(certs.host_ca_keys),
            ssh_key_pem=private_key_to_pem(ssh_key).encode() if ssh_key else b"")

    async def start(self) -> dict[str, str]:
        await self.server.start()
        await ensure_presets(self.server)
        await self.server.lock_feed.load()  # locks in force before the first request
        self.server.lock_feed.start()
        self.lock_sweep.start()
        await self.rotation.start()
        self.server.static_proxy_token = _read_token(self.settings.auth.proxy_token_file)
        self.server.static_db_token = _read_token(self.settings.auth.db_token_file,
                                                  "db_token_file", "db")
        self.server.static_kube_token = _read_token(self.settings.auth.kube_token_file,
                                                    "kube_token_file", "kube")
        self.server.proxy_names = configured_proxy_names(self.settings)
        await register_local_host(self.server.backend, host_uuid(self.settings.data_dir))
        listeners = self.settings.listeners
        hosts = [parse_address(a)[0] for a in (listeners.auth, listeners.auth_join) if a]
        own = self.issue_local_credentials(  # one certificate for both listeners
            SystemRole.AUTH, list(dict.fromkeys([*hosts, *self.settings.auth.server_names])))
        tls_ca = self.server.authorities.get(CertAuthorityType.TLS)
        # The auth API: the handshake fails without a client certificate of this CA. The
        # join listener asks for none and serves /v1/join only (limen.auth.http.join_listener).
        context = own.server_ssl(client_cas=list(tls_ca.trusted_certificates()),
                                 require_client_cert=True)
        sock, join_sock = bind_auth_listeners(self.settings.listeners.auth,
                                              self.settings.listeners.auth_join)
        self.address, self.join_address = socket_address(sock), socket_address(join_sock)
        self._runner = web.AppRunner(build_app(self.server, self.settings.data_dir),
                                     access_log=None, handle_signals=False)
        self._join_runner = web.AppRunner(build_join_app(self.server), access_log=None,
                                          handle_signals=False)
        try:
            await self._runner.setup()
            await web.SockSite(self._runner, sock, ssl_context=context).start()
            await self._join_runner.setup()
            await web.SockSite(self._join_runner, join_sock,
                               ssl_context=own.server_ssl(client_cas=None)).start()
        except BaseException:
            sock.close()
            join_sock.close()
            raise
        self._write_admin_identity()
        return {"auth": self.address, "auth_join": self.join_address}

    def _write_admin_identity(self) -> None:
        key = generate_private_key()
        cert = self.server.issue_admin_cert(public_key_to_openssh(key.public_key()),
                                            ADMIN_CERT_TTL)
        tls_ca = self.server.authorities.get(CertAuthorityType.TLS)
        HostCredentials(
            cluster=self.server.cluster_name, host_id="admin", role="admin",
            private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=cert,
            tls_ca_pem=tls_ca.pem_bundle().encode(),
        ).save(self.settings.data_dir / "admin")

    async def stop(self) -> None:
        # long polls of GET /v1/locks (agents, the proxies' lock push to leaves) answer now
        # rather than at the end of their wait, which the graceful shutdown would sit out
        self.server.locks.changed.notify()
        for runner in (self._join_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._join_runner = None
        await self.lock_sweep.stop()
        await self.rotation.stop()
        await self.server.lock_feed.stop()
