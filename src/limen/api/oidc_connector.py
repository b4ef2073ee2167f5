"""The ``OIDCConnector`` kind read as typed data: an OpenID provider Limen's users log in with.

Declared like every public kind (Git, ``lmctl apply``, a Kubernetes CR); its schema is
``crds/limen.dev_oidcconnectors.yaml``. :meth:`OIDCConnector.from_resource` reads a validated
resource, :func:`oidc_connector_problems` adds what the schema cannot say (the issuer is https
unless it is on a loopback address, ``max_session_ttl`` parses). The client secret is only a
reference (``client_secret_ref``: ``{file: NAME}`` or ``{env: LIMEN_SECRET_...}``, the rule of
``limen.api.secret_refs``); auth resolves it when it exchanges a code. Called by
``limen.api.validation`` and the auth side of single sign-on (``limen.auth.sso``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from limen.api.durations import parse_duration
from limen.api.loader import FieldPath
from limen.api.resources import Kind, Resource
from limen.errors import BadParameter

__all__ = [
    "DEFAULT_REDIRECT_URL",
    "DEFAULT_SCOPES",
    "ClaimMapping",
    "OIDCConnector",
    "checked_spec",
    "endpoint_problems",
    "is_loopback_host",
    "oidc_connector_problems",
    "secret_ref_of",
    "session_ttl_of",
    "session_ttl_problems",
    "web_callback_path",
    "web_redirect_problems",
]

DEFAULT_REDIRECT_URL = "http://127.0.0.1/callback"
"""The redirect URI registered at the provider when the connector names none (lmsh adds the
port of its loopback listener, as RFC 8252 section 7.3 has native clients do)."""
DEFAULT_SCOPES = ("email", "profile")
"""Scopes asked for besides ``openid`` when the connector names none."""
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (as ``urlsplit`` gives it) is this machine's loopback address."""
    return (host or "").lower() in _LOOPBACK


def web_callback_path(kind: str) -> str:
    """The proxy's web UI callback of a connector kind (``oidc``, ``github``): the path of
    every ``web_redirect_url`` (``limen.proxy.webui.sso_web``)."""
    return f"/v1/webapi/sso/{kind}/web/callback"


def web_redirect_problems(spec: Mapping[str, Any], kind: str
                          ) -> Iterator[tuple[FieldPath, str]]:
    """``web_redirect_url``, when given, is the proxy's web callback over https."""
    url = spec.get("web_redirect_url")
    if not isinstance(url, str):
        return
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        yield ("spec", "web_redirect_url"), "must be an https URL of the proxy"
    elif parts.path != web_callback_path(kind):
        yield (("spec", "web_redirect_url"),
               f"must be https://PROXY{web_callback_path(kind)} (the proxy's web callback)")


def endpoint_problems(spec: Mapping[str, Any], field: str) -> Iterator[tuple[FieldPath, str]]:
    """``field``, when given, is an https URL; http only on a loopback address (anything else
    would let a network attacker answer for the provider)."""
    url = spec.get(field)
    if not isinstance(url, str):
        return
    parts = urlsplit(url)
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        yield ("spec", field), "must be https (http only on a loopback address)"
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        yield ("spec", field), "must be an https URL"


def session_ttl_problems(spec: Mapping[str, Any]) -> Iterator[tuple[FieldPath, str]]:
    """``max_session_ttl``, when given, is a duration."""
    ttl = spec.get("max_session_ttl")
    if isinstance(ttl, str):
        try:
            parse_duration(ttl)
        except BadParameter as err:
            yield ("spec", "max_session_ttl"), str(err)


def checked_spec(resource: Resource, kind: Kind, what: str,
                 problems: Callable[[Mapping[str, Any]], Iterator[tuple[FieldPath, str]]]
                 ) -> Mapping[str, Any]:
    """A connector resource's spec, or ``BadParameter`` naming its first problem."""
    if resource.kind is not kind:
        article = "an" if kind.value[0] in "AEIOU" else "a"
        raise BadParameter(f"{resource.key} is not {article} {kind.value}")
    spec = resource.spec
    for path, reason in problems(spec):
        raise BadParameter(f"{what} {resource.name}: {'.'.join(str(p) for p in path)}: "
                           f"{reason}")
    return spec


def secret_ref_of(spec: Mapping[str, Any]) -> dict[str, str]:
    """``client_secret_ref`` as strings (the reference, never the secret)."""
    ref = spec.get("client_secret_ref")
    return {str(k): str(v) for k, v in ref.items()} if isinstance(ref, Mapping) else {}


def session_ttl_of(spec: Mapping[str, Any]) -> timedelta | None:
    ttl = spec.get("max_session_ttl")
    return parse_duration(ttl) if isinstance(ttl, str) and ttl else None


@dataclass(frozen=True)
class ClaimMapping:
    """``claims_to_roles`` entry: a claim whose value matches ``value`` (exact, or a glob
    with ``*``) gives ``roles``."""

    claim: str
    value: str
    roles: tuple[str, ...]


@dataclass(frozen=True)
class OIDCConnector:
    """One connector as auth uses it; ``client_secret_ref`` is the reference, never the
    secret."""

    name: str
    issuer_url: str
    client_id: str
    client_secret_ref: Mapping[str, str]
    claims_to_roles: tuple[ClaimMapping, ...]
    redirect_url: str = DEFAULT_REDIRECT_URL
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    username_claim: str = "email"
    max_session_ttl: timedelta | None = None
    display: str = ""
    web_redirect_url: str = ""
    """The proxy's web callback registered at the provider; empty: no web UI login."""

    @classmethod
    def from_resource(cls, resource: Resource) -> OIDCConnector:
        spec = checked_spec(resource, Kind.OIDC_CONNECTOR, "OIDC connector",
                            oidc_connector_problems)
        mappings = tuple(
            ClaimMapping(str(m["claim"]), str(m["value"]), tuple(str(r) for r in m["roles"]))
            for m in spec.get("claims_to_roles") or [] if isinstance(m, Mapping))
        return cls(
            name=resource.name,
            issuer_url=str(spec["issuer_url"]).rstrip("/"),
            client_id=str(spec["client_id"]),
            client_secret_ref=secret_ref_of(spec),
            claims_to_roles=mappings,
            redirect_url=str(spec.get("redirect_url") or DEFAULT_REDIRECT_URL),
            scopes=tuple(str(s) for s in spec.get("scopes") or DEFAULT_SCOPES),
            username_claim=str(spec.get("username_claim") or "email"),
            max_session_ttl=session_ttl_of(spec),
            display=str(spec.get("display") or resource.name),
            web_redirect_url=str(spec.get("web_redirect_url") or ""),
        )


def oidc_connector_problems(spec: Mapping[str, Any]) -> Iterator[tuple[FieldPath, str]]:
    """What the schema cannot check: an http issuer is on a loopback address (anything else
    would let a network attacker answer for the provider), ``max_session_ttl`` is a
    duration, and ``scopes`` does not repeat ``openid`` (always asked for)."""
    yield from endpoint_problems(spec, "issuer_url")
    yield from session_ttl_problems(spec)
    scopes = spec.get("scopes")
    if isinstance(scopes, list) and "openid" in scopes:
        yield ("spec", "scopes"), "openid is always asked for; list only the other scopes"
    yield from web_redirect_problems(spec, "oidc")
