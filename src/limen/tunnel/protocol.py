"""The reverse tunnel's wire formats: control messages and the data-connection preamble.

Pure code (bytes in, messages out, no I/O), fuzzed by the unit tests: any input either decodes
or raises :class:`~limen.errors.BadParameter`. Called by :mod:`limen.tunnel.server` (proxy side)
and :mod:`limen.tunnel.agent` (agent side).

Control messages travel on the ``limen-control@limen.dev`` subsystem channel of the agent's SSH
control connection, one frame each: a 4-byte big-endian length, then a compact JSON object with
a ``type`` field::

    agent                                   proxy
      │── hello {cert: agent host cert} ────▶│ verify cert (host CA, cluster, expiry, role) and
      │                                      │ that it certifies the key the agent logged in with
      │◀── welcome {cert: proxy host cert} ──│ the agent checks the proxy the same way
      │── heartbeat {resource} ─────────────▶│ every 10 s; forwarded to auth presence
      │◀── dial {nonce, kind, target, ...} ──│ "open a data connection for this user session"
      │── dial_failed {nonce, reason} ──────▶│ (only when the agent cannot serve it)
      │── connect {id, kind: "auth"} ───────▶│ "connect me to auth" (agents behind NAT;
      │                                      │  refused on a cluster link, see clusters)
      │◀── connect_ok {id, nonce} ───────────│ or connect_failed {id, reason}
      │◀── proxies {proxies} ────────────────│ the cluster's proxy set changed (also in
      │                                      │  welcome): the agent keeps a tunnel to each
      │◀── locks {revision, items} ──────────│ cluster links only: the root's locks on its
      │                                      │  users, roles and logins (see clusters)
      │◀── cas {update} ─────────────────────│ cluster links only: the root's current public
      │                                      │  CAs, signed by the root proxy (see clusters)
      │── leaf_cas {update} ────────────────▶│ cluster links only: the leaf's own public
      │                                      │  CAs, signed by the leaf proxy (see clusters)
      │◀── trust {doc} ──────────────────────│ agents whose hello asked (``trust``): auth's
      │                                      │  trust answer signed by auth, checked by the
      │                                      │  agent (limen.proxy.trust_push)

Several proxies: ``welcome`` and ``proxies`` carry the proxies of the cluster (host id and
tunnel address as agents reach it, :class:`ProxyEntry`); an agent's ``hello`` lists in
``held`` the proxies it already has a tunnel to, and a proxy that finds itself there answers
``welcome`` without registering the connection (it came through another address of the same
proxy, or a load balancer): the agent closes it, and the tunnel it holds is left alone.

Data connections are new TCP connections from the agent to the same tunnel port that start
with the preamble ``LIMEN-DATA <nonce>\\n`` (nonce: 128 random bits, 32 lowercase hex digits);
after it the connection carries the payload bytes untouched. The proxy tells control and data
connections apart by their first bytes (``SSH-`` versus ``LIMEN-DATA ``).
"""

from __future__ import annotations

import json
import re
import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from limen.errors import BadParameter

__all__ = [
    "CONTROL_SUBSYSTEM",
    "DATA_PREFIX",
    "KIND_APP",
    "KIND_AUTH",
    "KIND_DB",
    "KIND_KUBE",
    "KIND_NODE",
    "MAX_FRAME",
    "MAX_LOCKS",
    "MAX_PREAMBLE",
    "MAX_PROXIES",
    "MODE_RAW",
    "MODE_TLS",
    "PROTOCOL_VERSION",
    "Connect",
    "ConnectFailed",
    "ConnectOk",
    "Decoder",
    "Dial",
    "DialFailed",
    "DialRequest",
    "Heartbeat",
    "Hello",
    "LeafCAs",
    "Locks",
    "Message",
    "Proxies",
    "ProxyEntry",
    "RootCAs",
    "TrustPush",
    "Welcome",
    "decode_message",
    "encode",
    "format_preamble",
    "new_nonce",
    "parse_preamble",
]

PROTOCOL_VERSION = 1
CONTROL_SUBSYSTEM = "limen-control@limen.dev"
"""Name of the SSH subsystem that carries the control messages."""
DATA_PREFIX = b"LIMEN-DATA "
"""First bytes of a data connection."""
MAX_PREAMBLE = len(DATA_PREFIX) + 32 + 1
"""Length of a complete preamble line, newline included."""
MAX_FRAME = 256 * 1024
"""Largest control frame accepted (a heartbeat carries a Resource document)."""
MAX_TEXT = 16 * 1024
"""Largest string field other than certificates and resources."""
MAX_CERT = 64 * 1024
"""Largest certificate field (``limen.ca.ssh_certs.MAX_CERT_SIZE``)."""
MAX_PROXIES = 256
"""Most proxies a ``welcome``/``proxies`` message lists, or a ``hello`` holds."""
MAX_PROXY_TEXT = 300
"""Largest proxy host id or tunnel address."""
MAX_LOCKS = 1000
"""Most lock documents a ``locks`` message carries (the frame limit applies too)."""

KIND_NODE = "node"
"""Dial the agent's SSH server (the node agent serves one SSH connection on the data socket)."""
KIND_AUTH = "auth"
"""Agent to proxy: splice the data connection to the auth API (mTLS stays end to end)."""
KIND_DB = "db"
"""Dial a db agent (always :data:`MODE_TLS`): after the TLS handshake the proxy sends the
session request (``limen.agents.db.wire``) and the database protocol follows."""
KIND_KUBE = "kube"
"""Dial a kube agent (always :data:`MODE_TLS`): after the TLS handshake the proxy sends the
connection request (``limen.tunnel.kube_wire``) and the client's HTTP/1.1 follows."""
KIND_APP = "app"
"""Dial an app agent (always :data:`MODE_TLS`): after the TLS handshake the proxy sends the
connection request (``limen.tunnel.app_wire``), the agent answers, and one HTTP/1.1 exchange
with the app follows."""
MODE_RAW = "raw"
"""The payload is authenticated and encrypted end to end (SSH, mTLS): relay bytes untouched."""
MODE_TLS = "tls"
"""For protocols the proxy terminates (databases): the data connection is wrapped in mutual TLS
between proxy (TLS client) and agent (TLS server), each checking the other's host certificate
(cluster TLS CA, role, host id) before a byte of the payload flows."""
MODES = (MODE_RAW, MODE_TLS)

_HEADER = struct.Struct(">I")
_NONCE = re.compile(rb"[0-9a-f]{32}")
_NONCE_TEXT = re.compile(r"[0-9a-f]{32}")


def new_nonce() -> str:
    """128 random bits as 32 lowercase hex digits."""
    return secrets.token_hex(16)


def format_preamble(nonce: str) -> bytes:
    if not _NONCE_TEXT.fullmatch(nonce):
        raise BadParameter("a data-connection nonce is 32 lowercase hex digits")
    return DATA_PREFIX + nonce.encode() + b"\n"


def parse_preamble(line: bytes) -> str:
    """The nonce of a complete preamble line (with its newline), or :class:`BadParameter`."""
    if len(line) != MAX_PREAMBLE or not line.startswith(DATA_PREFIX) or line[-1:] != b"\n":
        raise BadParameter("malformed data-connection preamble")
    nonce = line[len(DATA_PREFIX):-1]
    if not _NONCE.fullmatch(nonce):
        raise BadParameter("malformed data-connection nonce")
    return nonce.decode()


# ---------------------------------------------------------------------- messages


@dataclass(frozen=True)
class DialRequest:
    """What a dial asks the agent to serve (proxy to agent), or the proxy (agent to proxy)."""

    kind: str
    """:data:`KIND_NODE` (SSH to the node agent), :data:`KIND_DB`, :data:`KIND_KUBE` or
    :data:`KIND_AUTH`."""
    target: str = ""
    """The name the user asked for (``web1``, ``web1:22``), for the agent's logs and audit."""
    mode: str = MODE_RAW
    """:data:`MODE_RAW` (end-to-end protected payloads) or :data:`MODE_TLS` (databases)."""
    client_addr: str = ""
    """``host:port`` of the user's client as the proxy saw it."""
    user: str = ""
    """The Limen user the proxy authenticated (informational: the node re-verifies)."""
    session_id: str = ""
    nonce: str = ""
    """Set by the tunnel server when it sends the dial."""
    cert: str = ""
    """Dials through a cluster link (root proxy to leaf proxy): the user's SSH certificate
    (OpenSSH line), which the leaf verifies against the root's user CA itself."""


@dataclass(frozen=True)
class ProxyEntry:
    """One proxy of the cluster as its siblings announce it to agents."""

    host_id: str
    address: str
    """Its tunnel listener as agents reach it, ``host:port``."""


@dataclass(frozen=True)
class Hello:
    type: ClassVar[str] = "hello"
    cert: str
    version: int = PROTOCOL_VERSION
    held: tuple[str, ...] = ()
    """Host ids of the proxies this agent already has a tunnel to."""
    trust: bool = False
    """The agent takes auth's signed trust answer pushed (``trust`` messages); a proxy sends
    none to an agent that does not ask (an older agent would drop the tunnel)."""


@dataclass(frozen=True)
class Welcome:
    type: ClassVar[str] = "welcome"
    cert: str
    proxy_id: str
    cluster: str
    heartbeat_interval: float = 10.0
    proxies: tuple[ProxyEntry, ...] = ()
    """The cluster's proxies (empty: this proxy does not announce any)."""
    leaf_cas: bool = False
    """Cluster links: this root takes the leaf's own CAs (``leaf_cas``); a leaf sends none to
    a root that does not say so (an older root would drop the link)."""


@dataclass(frozen=True)
class Proxies:
    """Proxy to agent: the cluster's proxy set changed."""

    type: ClassVar[str] = "proxies"
    proxies: tuple[ProxyEntry, ...] = ()


@dataclass(frozen=True)
class Heartbeat:
    type: ClassVar[str] = "heartbeat"
    resource: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Dial:
    type: ClassVar[str] = "dial"
    request: DialRequest


@dataclass(frozen=True)
class DialFailed:
    type: ClassVar[str] = "dial_failed"
    nonce: str
    reason: str


@dataclass(frozen=True)
class Connect:
    type: ClassVar[str] = "connect"
    id: int
    kind: str


@dataclass(frozen=True)
class ConnectOk:
    type: ClassVar[str] = "connect_ok"
    id: int
    nonce: str


@dataclass(frozen=True)
class ConnectFailed:
    type: ClassVar[str] = "connect_failed"
    id: int
    reason: str


@dataclass(frozen=True)
class Locks:
    """Root proxy to a leaf's cluster link: the root's locks that can concern root users at
    the leaf (Lock documents), as of the root's lock ``revision``; sent when the link is
    welcomed, on every change and as a keepalive that tells the leaf the copy is fresh."""

    type: ClassVar[str] = "locks"
    revision: int = 0
    items: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class RootCAs:
    """Root proxy to a leaf's cluster link: the root's current public CAs as one signed update
    (``limen.auth.trusted_clusters.ca_update``: checked by the leaf's auth, not here); sent
    when the link is welcomed and on every change."""

    type: ClassVar[str] = "cas"
    update: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LeafCAs:
    """A leaf proxy's cluster link to the root: the leaf's own current public CAs as one
    signed update (``limen.auth.trusted_clusters.ca_update``, direction leaf_to_root: checked
    by the root's auth, not here); sent when the link is welcomed and on every change."""

    type: ClassVar[str] = "leaf_cas"
    update: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrustPush:
    """Proxy to an agent whose hello asked: auth's trust answer (or a keepalive of its
    revision) as auth signed it (``limen.auth.trust_signature``: checked by the agent, not
    here); sent when the agent is registered, on every change and as a keepalive."""

    type: ClassVar[str] = "trust"
    doc: Mapping[str, Any] = field(default_factory=dict)


Message = (Hello | Welcome | Heartbeat | Dial | DialFailed | Connect | ConnectOk
           | ConnectFailed | Proxies | Locks | RootCAs | LeafCAs | TrustPush)


def encode(message: Message) -> bytes:
    """One frame: length prefix and compact JSON."""
    body: dict[str, Any] = {"type": message.type, **asdict(message)}
    payload = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    if len(payload) > MAX_FRAME:
        raise BadParameter(f"control message larger than {MAX_FRAME} bytes")
    return _HEADER.pack(len(payload)) + payload


def decode_message(payload: bytes) -> Message:
    """One frame's JSON body as a message; :class:`BadParameter` for anything else."""
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise BadParameter(f"control message is not JSON: {err}") from None
    if not isinstance(doc, dict):
        raise BadParameter("control message is not a JSON object")
    kind = doc.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise BadParameter(f"unknown control message type {str(kind)[:40]!r}")
    return parser(doc)


class Decoder:
    """Incremental frame decoder: ``feed(bytes)`` returns the complete messages so far.

    A malformed frame raises :class:`BadParameter`; the connection must then be dropped (the
    decoder stays failed)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._failed = False

    def feed(self, data: bytes) -> list[Message]:
        if self._failed:
            raise BadParameter("control stream already failed")
        self._buf += data
        out: list[Message] = []
        try:
            while len(self._buf) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self._buf)
                if size > self._max:
                    raise BadParameter(f"control frame of {size} bytes exceeds {self._max}")
                end = _HEADER.size + size
                if len(self._buf) < end:
                    break
                payload = bytes(self._buf[_HEADER.size:end])
                del self._buf[:end]
                out.append(decode_message(payload))
        except BadParameter:
            self._failed = True
            raise
        return out


# ---------------------------------------------------------------------- field parsing


def _text(doc: Mapping[str, Any], key: str, *, limit: int = MAX_TEXT,
          required: bool = True) -> str:
    value = doc.get(key, None if required else "")
    if not isinstance(value, str):
        raise BadParameter(f"control message field {key!r} must be a string")
    if len(value) > limit:
        raise BadParameter(f"control message field {key!r} is too long")
    return value


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise BadParameter(f"control message field {key!r} must be a non-negative integer")
    return value


def _nonce(doc: Mapping[str, Any], key: str = "nonce") -> str:
    value = _text(doc, key)
    if not _NONCE_TEXT.fullmatch(value):
        raise BadParameter("control message nonce must be 32 lowercase hex digits")
    return value


def _choice(doc: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = _text(doc, key, limit=64)
    if value not in allowed:
        raise BadParameter(f"control message field {key!r} has an unknown value {value!r}")
    return value


def _held(doc: Mapping[str, Any]) -> tuple[str, ...]:
    value = doc.get("held", [])
    if not isinstance(value, list) or len(value) > MAX_PROXIES or not all(
            isinstance(item, str) and len(item) <= MAX_PROXY_TEXT for item in value):
        raise BadParameter(f"control message field 'held' must be a list of at most "
                           f"{MAX_PROXIES} proxy ids")
    return tuple(value)


def _proxies(doc: Mapping[str, Any]) -> tuple[ProxyEntry, ...]:
    value = doc.get("proxies", [])
    if not isinstance(value, list) or len(value) > MAX_PROXIES:
        raise BadParameter(f"control message field 'proxies' must be a list of at most "
                           f"{MAX_PROXIES} proxies")
    entries = []
    for item in value:
        if not isinstance(item, dict):
            raise BadParameter("control message field 'proxies' lists objects")
        entries.append(ProxyEntry(host_id=_text(item, "host_id", limit=MAX_PROXY_TEXT),
                                  address=_text(item, "address", limit=MAX_PROXY_TEXT)))
    return tuple(entries)


def _hello(doc: Mapping[str, Any]) -> Hello:
    trust = doc.get("trust", False)
    if not isinstance(trust, bool):
        raise BadParameter("control message field 'trust' must be a boolean")
    return Hello(cert=_text(doc, "cert", limit=MAX_FRAME), version=_int(doc, "version"),
                 held=_held(doc), trust=trust)


def _welcome(doc: Mapping[str, Any]) -> Welcome:
    interval = doc.get("heartbeat_interval")
    if (not isinstance(interval, int | float) or isinstance(interval, bool)
            or not 0.01 <= interval <= 3600):
        raise BadParameter("control message field 'heartbeat_interval' is out of range")
    leaf_cas = doc.get("leaf_cas", False)
    if not isinstance(leaf_cas, bool):
        raise BadParameter("control message field 'leaf_cas' must be a boolean")
    return Welcome(cert=_text(doc, "cert", limit=MAX_FRAME), proxy_id=_text(doc, "proxy_id"),
                   cluster=_text(doc, "cluster"), heartbeat_interval=float(interval),
                   proxies=_proxies(doc), leaf_cas=leaf_cas)


def _proxies_message(doc: Mapping[str, Any]) -> Proxies:
    return Proxies(proxies=_proxies(doc))


def _heartbeat(doc: Mapping[str, Any]) -> Heartbeat:
    resource = doc.get("resource")
    if not isinstance(resource, dict):
        raise BadParameter("control message field 'resource' must be an object")
    return Heartbeat(resource=resource)


def _dial(doc: Mapping[str, Any]) -> Dial:
    req = doc.get("request")
    if not isinstance(req, dict):
        raise BadParameter("control message field 'request' must be an object")
    return Dial(DialRequest(
        kind=_text(req, "kind", limit=64), target=_text(req, "target", required=False),
        mode=_choice(req, "mode", MODES), client_addr=_text(req, "client_addr", required=False),
        user=_text(req, "user", required=False),
        session_id=_text(req, "session_id", required=False, limit=128),
        nonce=_nonce(req), cert=_text(req, "cert", required=False, limit=MAX_CERT)))


def _dial_failed(doc: Mapping[str, Any]) -> DialFailed:
    return DialFailed(nonce=_nonce(doc), reason=_text(doc, "reason"))


def _connect(doc: Mapping[str, Any]) -> Connect:
    return Connect(id=_int(doc, "id"), kind=_text(doc, "kind", limit=64))


def _connect_ok(doc: Mapping[str, Any]) -> ConnectOk:
    return ConnectOk(id=_int(doc, "id"), nonce=_nonce(doc))


def _connect_failed(doc: Mapping[str, Any]) -> ConnectFailed:
    return ConnectFailed(id=_int(doc, "id"), reason=_text(doc, "reason"))


def _locks(doc: Mapping[str, Any]) -> Locks:
    items = doc.get("items", [])
    if not isinstance(items, list) or len(items) > MAX_LOCKS or not all(
            isinstance(item, dict) for item in items):
        raise BadParameter(f"control message field 'items' must be a list of at most "
                           f"{MAX_LOCKS} objects")
    return Locks(revision=_int(doc, "revision"), items=tuple(items))


def _update(doc: Mapping[str, Any]) -> dict[str, Any]:
    update = doc.get("update")
    if not isinstance(update, dict):
        raise BadParameter("control message field 'update' must be an object")
    return update


def _root_cas(doc: Mapping[str, Any]) -> RootCAs:
    return RootCAs(update=_update(doc))


def _leaf_cas(doc: Mapping[str, Any]) -> LeafCAs:
    return LeafCAs(update=_update(doc))


def _trust_push(doc: Mapping[str, Any]) -> TrustPush:
    signed = doc.get("doc")
    if not isinstance(signed, dict):
        raise BadParameter("control message field 'doc' must be an object")
    return TrustPush(doc=signed)


_PARSERS: dict[str, Callable[[Mapping[str, Any]], Message]] = {
    Hello.type: _hello, Welcome.type: _welcome, Heartbeat.type: _heartbeat, Dial.type: _dial,
    DialFailed.type: _dial_failed, Connect.type: _connect, ConnectOk.type: _connect_ok,
    ConnectFailed.type: _connect_failed, Proxies.type: _proxies_message, Locks.type: _locks,
    RootCAs.type: _root_cas, LeafCAs.type: _leaf_cas, TrustPush.type: _trust_push,
}
