"""A raw client of the proxy's TLS-routed SSH proxy (ALPN ``limen-ssh-proxy`` on the web port)
for the tests: any certificate, any request bytes; returns the proxy's answer line and what
followed. And the cluster both test modules start: a node labelled env=dev, the example roles,
and a logged-in user of role ``ops``. Used by tests/integration/test_ssh_tls_route.py and
tests/security/test_ssh_tls_route_attacks.py."""

from __future__ import annotations

import getpass
import json
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from limen.ca.keys import load_private_key, private_key_to_pem

from .cluster import ClusterFactory, LimenCluster, LimenUser, wait_for

ALPN = "limen-ssh-proxy"
LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
EXAMPLE_ROLES = Path(__file__).resolve().parents[2] / "examples" / "gitops" / "roles"


def start_site(clusters: ClusterFactory, name: str) -> LimenCluster:
    """A cluster with its node (env=dev) and the example roles."""
    cluster = clusters(name, "--labels", "env=dev")
    cluster.lmctl("apply", "-f", EXAMPLE_ROLES)
    return cluster


def ops_user(site: LimenCluster, name: str) -> LimenUser:
    """A user of role ``ops`` (this machine's login), logged in, who sees the node."""
    user = site.signed_up_user(name, roles=["ops"], logins=[LOGIN])
    user.login()
    wait_for(lambda: HOST in user.lmsh("ls").stdout, 20.0, "the node in lmsh ls")
    return user


@dataclass(frozen=True)
class Answer:
    line: str
    """The first line (``OK`` or ``ERR <reason>``)."""
    rest: bytes
    """What followed until the proxy closed or ``until`` was seen."""
    alpn: str | None


def user_credentials(user: LimenUser, tmp: Path) -> tuple[Path, Path]:
    """The user's login certificate and its key as PEM files (the key is saved OpenSSH)."""
    key = tmp / f"{user.name}.key.pem"
    key.write_text(private_key_to_pem(load_private_key(
        (user.key_dir / user.name).read_bytes())), encoding="utf-8")
    key.chmod(0o600)
    return user.key_dir / f"{user.name}.crt", key


def context(site: LimenCluster, cert: tuple[Path, Path] | None,
            alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(site.data_dir / "admin" / "cas.pem"))
    ctx.check_hostname = False  # the proxy is checked by its CA here; lmsh checks its role
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    ctx.set_alpn_protocols(alpn or [ALPN])
    return ctx


def exchange(site: LimenCluster, cert: tuple[Path, Path] | None, payload: bytes, *,
             until: bytes = b"", timeout: float = 20.0) -> Answer:
    """Send ``payload`` after the handshake; read until the proxy closes (or ``until`` has
    been read after the answer line)."""
    host, port = site.web.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as raw, \
            context(site, cert).wrap_socket(raw, server_hostname=host) as tls:
        alpn = tls.selected_alpn_protocol()
        if payload:
            tls.sendall(payload)
        data = b""
        while True:
            line, sep, rest = data.partition(b"\n")
            if sep and until and until in rest:
                break
            try:
                chunk = tls.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                break
            if not chunk:
                break
            data += chunk
        line, _, rest = data.partition(b"\n")
        return Answer(line.decode(errors="replace"), rest, alpn)


def request(login: str, host: str, port: int = 3022, cluster: str = "", **extra: object
            ) -> bytes:
    doc = {"login": login, "host": host, "port": port, "cluster": cluster, **extra}
    return json.dumps(doc).encode() + b"\n"
