"""A Limen process's credentials: its private key, host/client certificates and the CAs it
trusts, as issued at join (agents, proxies) or at start (the admin identity in DATA_DIR/admin).

Saved as a directory of 0600 files (``key.pem``, ``tls.crt``, ``ssh-cert.pub``, ``cas.pem``,
``meta.json``, and ``ssh-key.pem`` when the SSH host key is a key of its own) written
atomically. Called by the daemon, the auth client, the proxy and agents.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from limen.ca.identity import SystemRole
from limen.ca.keys import load_private_key
from limen.ca.peer_role import require_server_role
from limen.ca.tls import client_context, server_context
from limen.errors import NotFound
from limen.files import private_dir, write_private

__all__ = ["HostCredentials"]


@dataclass(frozen=True)
class HostCredentials:
    cluster: str
    host_id: str
    role: str
    """System role: admin, proxy, node, db, kube, app."""
    private_key_pem: bytes = field(repr=False)
    tls_cert_pem: bytes
    tls_ca_pem: bytes
    ssh_cert: bytes = b""
    user_ca_keys: tuple[str, ...] = ()
    host_ca_keys: tuple[str, ...] = ()
    hostname: str = ""
    ssh_key_pem: bytes = field(default=b"", repr=False)
    """The SSH host key when it is not the TLS key (``ssh_cert`` certifies it): the proxy's
    TLS key is P-256 for browsers, its SSH listeners offer Ed25519 only. Empty: the SSH host
    key is ``private_key_pem``."""

    @property
    def ssh_private_key_pem(self) -> bytes:
        """The private key ``ssh_cert`` certifies."""
        return self.ssh_key_pem or self.private_key_pem

    def tls_cas(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.tls_ca_pem)

    def client_ssl(self, *, check_hostname: bool = True,
                   server_role: SystemRole = SystemRole.AUTH) -> ssl.SSLContext:
        """Mutual-TLS client context for calling auth (or a peer of this cluster): the
        server must show the certificate of ``server_role`` of this cluster, checked in the
        handshake (``limen.ca.peer_role``): a node's certificate of the same CA is refused
        before anything is sent."""
        context = client_context(x509.load_pem_x509_certificate(self.tls_cert_pem),
                                 load_private_key(self.private_key_pem), self.tls_cas(),
                                 check_hostname=check_hostname)
        return require_server_role(context, server_role, {self.cluster: self.tls_cas()})

    def server_ssl(self, *, client_cas: Sequence[x509.Certificate] | None = None,
                   require_client_cert: bool = False) -> ssl.SSLContext:
        return server_context(x509.load_pem_x509_certificate(self.tls_cert_pem),
                              load_private_key(self.private_key_pem), client_cas,
                              require_client_cert)

    def save(self, directory: Path) -> None:
        private_dir(directory)
        meta = {"cluster": self.cluster, "host_id": self.host_id, "role": self.role,
                "hostname": self.hostname, "user_ca_keys": list(self.user_ca_keys),
                "host_ca_keys": list(self.host_ca_keys)}
        files = {"key.pem": self.private_key_pem, "tls.crt": self.tls_cert_pem,
                 "cas.pem": self.tls_ca_pem, "ssh-cert.pub": self.ssh_cert,
                 "meta.json": json.dumps(meta, indent=2).encode()}
        if self.ssh_key_pem:
            files["ssh-key.pem"] = self.ssh_key_pem
        for name, data in files.items():
            write_private(directory / name, data)

    @classmethod
    def load(cls, directory: Path) -> HostCredentials:
        try:
            meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
            ssh_key = directory / "ssh-key.pem"
            return cls(
                cluster=meta["cluster"], host_id=meta["host_id"], role=meta["role"],
                hostname=meta.get("hostname", ""),
                private_key_pem=(directory / "key.pem").read_bytes(),
                tls_cert_pem=(directory / "tls.crt").read_bytes(),
                tls_ca_pem=(directory / "cas.pem").read_bytes(),
                ssh_cert=(directory / "ssh-cert.pub").read_bytes(),
                user_ca_keys=tuple(meta.get("user_ca_keys", ())),
                host_ca_keys=tuple(meta.get("host_ca_keys", ())),
                ssh_key_pem=ssh_key.read_bytes() if ssh_key.is_file() else b"",
            )
        except (OSError, KeyError, ValueError) as err:
            raise NotFound(f"no usable credentials in {directory}: {err}") from None

