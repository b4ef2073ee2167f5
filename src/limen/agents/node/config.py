"""The node agent's SSH server settings and their translation into asyncssh options.

Built by the daemon (from ``Settings`` and the agent's ``HostCredentials``) or by tests, and
read by :class:`~limen.agents.node.ssh_server.NodeSSHServer`. :func:`server_options` is the one
place that decides how asyncssh is configured: what is on, what is off, and why.

Algorithms: the hardened sets of :mod:`limen.net.sshalgs`, the same as the proxy's listeners
(key exchange, AEAD ciphers with AES-GCM first, ETM SHA-2 MACs, no compression; the host key
is the agent's Ed25519 key and its certificate). SSH picks the first algorithm of the
*client's* list that the server also supports, so the order only decides for clients without a
preference of their own; ``lmsh config`` writes ``Ciphers`` for OpenSSH.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from limen.ca.host_credentials import HostCredentials
from limen.errors import BadParameter
from limen.net.sshalgs import ENCRYPTION_ALGS, MAX_PACKET, server_algorithms
from limen.recording.sink import sessions_dir
from limen.services.locks import LockView

__all__ = ["DEFAULT_CIPHERS", "MAX_PACKET_SIZE", "NodeServerConfig", "server_options"]

DEFAULT_CIPHERS = ENCRYPTION_ALGS
"""The hardened ciphers (:mod:`limen.net.sshalgs`); ``encryption_algs`` may only narrow them."""
MAX_PACKET_SIZE = MAX_PACKET
"""The channel packet size of every Limen SSH endpoint (:mod:`limen.net.sshalgs`)."""


@dataclass(frozen=True)
class NodeServerConfig:
    """Settings of one node agent's SSH server."""

    credentials: HostCredentials
    """The agent's key and host certificate (from join); the host key clients verify with
    their ``@cert-authority`` known_hosts line."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """This node's labels, matched against the roles' ``node_labels``; also in audit events."""
    data_dir: Path = Path(".limen-data")
    """Recordings in progress go to ``data_dir/log/sessions``."""
    record_input: bool = False
    """Also record keystrokes (``"i"`` events). Off by default: input holds the passwords
    typed at prompts (sudo, ssh) that the terminal does not echo. The "enhanced" recording
    flag of the node; a per-role option can feed it later."""
    sftp_server: str | None = None
    """Path of OpenSSH's ``sftp-server``; None = look in the usual places."""
    login_timeout: float = 30.0
    """Seconds a client has to authenticate."""
    keepalive_interval: float = 30.0
    """Server keepalives: a dead client is dropped after ``interval * count_max`` seconds."""
    keepalive_count_max: int = 3
    encryption_algs: tuple[str, ...] = DEFAULT_CIPHERS
    recording_flush_interval: float = 0.5
    """Seconds between recording flushes (the most a crash can lose)."""
    server_version: str = "Limen"
    lock_recheck_interval: float = 2.0
    """Seconds between re-checks of open ``lock: strict`` connections (see ``locks``)."""
    locks: LockView | None = field(default=None, compare=False)
    """The lock view the access policy enforces: a change re-checks the open connections at
    once (``limen.agents.node.locks``); None: only every ``lock_recheck_interval``."""

    def __post_init__(self) -> None:
        if not self.credentials.private_key_pem:
            raise BadParameter("the node SSH server needs the agent's private key")
        if self.login_timeout <= 0 or self.keepalive_interval < 0:
            raise BadParameter("login_timeout must be positive, keepalive_interval >= 0")
        if not self.encryption_algs or not set(self.encryption_algs) <= set(DEFAULT_CIPHERS):
            raise BadParameter(f"encryption_algs must be some of {', '.join(DEFAULT_CIPHERS)}")

    @property
    def cluster(self) -> str:
        return self.credentials.cluster

    @property
    def host_id(self) -> str:
        return self.credentials.host_id

    @property
    def hostname(self) -> str:
        return self.credentials.hostname or self.credentials.host_id

    @property
    def sessions_dir(self) -> Path:
        return sessions_dir(self.data_dir)


def host_key_pair(credentials: HostCredentials) -> Any:
    """The asyncssh host key, with its host certificate when the agent has one."""
    try:
        key = asyncssh.import_private_key(credentials.ssh_private_key_pem)
        if not credentials.ssh_cert.strip():
            return key
        cert = asyncssh.import_certificate(credentials.ssh_cert.strip())
    except (asyncssh.KeyImportError, ValueError) as err:
        raise BadParameter(f"cannot load the node's host key or certificate: {err}") from None
    return (key, cert)


def server_options(config: NodeServerConfig) -> dict[str, Any]:
    """Keyword arguments for ``asyncssh.SSHServerConnectionOptions``."""
    return {
        "server_host_keys": [host_key_pair(config.credentials)],
        "server_version": config.server_version,
        **server_algorithms(),
        "encryption_algs": list(config.encryption_algs),
        "max_pktsize": MAX_PACKET_SIZE,
        # Authentication: user certificates only, checked by Limen (see connection.py).
        "public_key_auth": True,
        "password_auth": False,
        "kbdint_auth": False,
        "host_based_auth": False,
        "gss_kex": False,
        "gss_auth": False,
        "authorized_client_keys": None,
        "login_timeout": config.login_timeout,
        "keepalive_interval": config.keepalive_interval,
        "keepalive_count_max": config.keepalive_count_max,
        # Sessions: raw bytes to and from real processes; asyncssh's own line editor, SFTP
        # server and scp would run inside the agent's process as root, so they stay off.
        "encoding": None,
        "line_editor": False,
        "allow_pty": True,
        "sftp_factory": None,
        "allow_scp": False,
        "x11_forwarding": False,
        # Checked again per request against the certificate and the roles (connection.py).
        "agent_forwarding": True,
    }
