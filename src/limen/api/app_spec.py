"""What an app Resource (``spec.kind: app``) says, read once: the upstream URI, the public
address users open, the header fields added to every request and the upstream TLS check.

::

    spec: {kind: app, uri: http://grafana.internal:3000, public_addr: grafana.proxy.example.com,
           rewrite: {headers: [{name: X-Team, value: ops}]}, tls: {insecure_skip_verify: false}}

``public_addr`` defaults to ``<name>.<the proxy's public host>``. Pure code, called by the
proxy's app route (:mod:`limen.proxy.app`), the app agent (:mod:`limen.agents.app`) and
``lmsh apps``; a spec that cannot be served raises :class:`~limen.errors.BadParameter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from limen.errors import BadParameter

__all__ = ["FORBIDDEN_REWRITES", "AppSpec", "app_spec", "default_public_addr"]

FORBIDDEN_REWRITES = frozenset({"host", "connection", "keep-alive", "te", "trailer",
                                "transfer-encoding", "upgrade", "content-length",
                                "proxy-connection", "cookie"})
"""Header fields a ``rewrite.headers`` entry may not set (nor any ``Limen-*``)."""


@dataclass(frozen=True)
class AppSpec:
    name: str
    uri: str
    """``http(s)://host:port`` as the app agent reaches it (a path prefix is kept)."""
    public_addr: str
    """The host name users open (no port)."""
    scheme: str
    host: str
    port: int
    path_prefix: str
    headers: tuple[tuple[str, str], ...] = ()
    insecure_skip_verify: bool = False

    @property
    def host_header(self) -> str:
        """The ``Host`` the upstream expects (the URI's authority)."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def default_public_addr(name: str, proxy_public_address: str) -> str:
    """``<name>.<host of the proxy's public address>``."""
    host = proxy_public_address.rpartition(":")[0] if proxy_public_address.count(":") == 1 \
        else proxy_public_address
    host = host.strip("[]")
    return f"{name}.{host}".lower() if host else name.lower()


def app_spec(name: str, spec: Mapping[str, Any], proxy_public_address: str) -> AppSpec:
    """The served form of app Resource ``name`` (see the module)."""
    uri = str(spec.get("uri") or "")
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadParameter(f"app {name}: uri {uri!r} is not an http(s):// URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BadParameter(f"app {name}: uri {uri!r} has an invalid port") from None
    public = str(spec.get("public_addr") or "") or default_public_addr(name,
                                                                       proxy_public_address)
    public = public.rpartition(":")[0] if public.count(":") == 1 else public
    headers: list[tuple[str, str]] = []
    for entry in (spec.get("rewrite") or {}).get("headers") or ():
        header, value = str(entry.get("name", "")), str(entry.get("value", ""))
        lower = header.lower()
        if lower in FORBIDDEN_REWRITES or lower.startswith("limen-") or \
                any(c in value for c in "\r\n\0"):
            raise BadParameter(f"app {name}: rewrite.headers may not set {header!r}")
        headers.append((header, value))
    tls = spec.get("tls") or {}
    return AppSpec(name=name, uri=uri, public_addr=public.lower(), scheme=parts.scheme,
                   host=parts.hostname, port=port, path_prefix=parts.path.rstrip("/"),
                   headers=tuple(headers),
                   insecure_skip_verify=bool(tls.get("insecure_skip_verify", False)))
