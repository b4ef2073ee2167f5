"""The wire format of the TLS-routed SSH proxy (ALPN ``limen-ssh-proxy`` on the web port),
shared by its two ends: ``limen.client.proxyssh_tls`` (the ProxyCommand ``lmsh proxy ssh``)
and ``limen.proxy.ssh_tls_route`` (the proxy's route).

After the TLS handshake (the user's X.509 certificate as the client certificate), the client
sends ONE line, a JSON object of at most :data:`MAX_REQUEST` bytes ending in ``\\n``::

    {"login": "alice", "host": "web1", "port": 3022, "cluster": "root",
     "ssh_cert": "ssh-ed25519-cert-v01@openssh.com AAAA..."}

(``ssh_cert``: the user's SSH certificate, presented by the proxy to a leaf cluster; optional.)
The proxy answers one line: ``OK`` (then raw bytes both ways: the user's own SSH session with
the node) or ``ERR <reason>`` and closes the connection.
"""

from __future__ import annotations

import json

from limen.errors import BadParameter

__all__ = ["ALPN_SSH", "MAX_REQUEST", "SSHRouteRequest", "answer_error", "parse_answer"]

ALPN_SSH = "limen-ssh-proxy"
MAX_REQUEST = 8192
"""Bytes of the request line, newline included (an SSH certificate is 1-3 KiB)."""
ANSWER_OK = b"OK\n"
MAX_ANSWER = 1024
_FIELD_LIMIT = 255


class SSHRouteRequest:
    """What the client asks the route for: an immutable value compared by its fields (a plain
    class, neither a dataclass nor a ``typing.NamedTuple``: the ProxyCommand imports this
    module, and ``dataclasses`` would cost it ``inspect``, ``typing`` ~3 ms of CPU)."""

    __slots__ = ("cluster", "host", "login", "port", "ssh_cert")

    login: str
    host: str
    port: int
    cluster: str
    ssh_cert: str

    def __init__(self, login: str, host: str, port: int, cluster: str = "",
                 ssh_cert: str = "") -> None:
        for name, value in (("login", login), ("host", host), ("port", port),
                            ("cluster", cluster), ("ssh_cert", ssh_cert)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"SSHRouteRequest is immutable ({name})")

    def _fields(self) -> tuple[str, str, int, str, str]:
        return self.login, self.host, self.port, self.cluster, self.ssh_cert

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SSHRouteRequest) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (f"SSHRouteRequest(login={self.login!r}, host={self.host!r}, port={self.port!r}, "
                f"cluster={self.cluster!r}, ssh_cert=<{len(self.ssh_cert)} chars>)")

    def encode(self) -> bytes:
        doc: dict[str, object] = {"login": self.login, "host": self.host, "port": self.port,
                               "cluster": self.cluster}
        if self.ssh_cert:
            doc["ssh_cert"] = self.ssh_cert
        line = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_REQUEST:
            raise BadParameter(f"the request to the proxy is over {MAX_REQUEST} bytes")
        return line

    @classmethod
    def parse(cls, line: bytes) -> SSHRouteRequest:
        """The request in ``line`` (without its newline); :class:`BadParameter` for anything
        but a JSON object with a login, a host and a port in 0-65535."""
        try:
            doc = json.loads(line.decode())
        except (UnicodeDecodeError, ValueError):
            raise BadParameter("malformed request: one JSON object per line expected") from None
        if not isinstance(doc, dict):
            raise BadParameter("malformed request: one JSON object per line expected")
        login, host, port = doc.get("login"), doc.get("host"), doc.get("port")
        cluster, cert = doc.get("cluster", ""), doc.get("ssh_cert", "")
        if not isinstance(login, str) or not isinstance(host, str) or not _text(login) \
                or not _text(host):
            raise BadParameter("malformed request: login and host must be non-empty strings")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise BadParameter("malformed request: port must be an integer in 0-65535")
        if not isinstance(cluster, str) or len(cluster) > _FIELD_LIMIT:
            raise BadParameter("malformed request: cluster must be a string")
        if not isinstance(cert, str):
            raise BadParameter("malformed request: ssh_cert must be a string")
        return cls(login=login, host=host, port=port, cluster=cluster, ssh_cert=cert)


def _text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _FIELD_LIMIT and value.isprintable()


def answer_error(reason: str) -> bytes:
    """``ERR <reason>``: one printable line."""
    flat = "".join(c for c in " ".join(reason.split()) if c.isprintable())[:400]
    return f"ERR {flat or 'refused'}\n".encode()


def parse_answer(line: bytes) -> str | None:
    """``None`` for ``OK``, else the refusal's reason."""
    text = line.decode(errors="replace").strip()
    if text == "OK":
        return None
    if text.startswith("ERR "):
        return text[4:] or "refused"
    return f"unexpected answer from the proxy: {text[:80]!r}"
