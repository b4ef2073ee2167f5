"""From verified ID token claims to a Limen user: the name, the roles and the traits.

- **name**: the connector's ``username_claim`` (default ``email``), lower-cased, as Teleport
  names SSO users after a claim; it must be a valid Limen name (``NAME_PATTERN``). A name that
  is a local user's is refused by the caller (an SSO login never acts as a local user).
- **roles**: every ``claims_to_roles`` entry whose claim (a string, or a list of strings) has a
  value equal to ``value``, or matching it as a glob where ``value`` holds ``*``; no role: the
  login is refused.
- **traits**: every claim that is a string, number, boolean or list of those, except the
  protocol's own (``iss``, ``aud``, ``exp``, ``nonce``...), becomes a trait read in role
  templates as ``{{external.<claim>}}``; bounded in count and size.

Pure; called by :class:`limen.auth.sso.oidc.OIDCLogins`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from limen.api.oidc_connector import ClaimMapping
from limen.api.resources import NAME_PATTERN
from limen.auth.sso.errors import SSOFailure

__all__ = ["PROTOCOL_CLAIMS", "claim_values", "mapped_roles", "traits_of", "username_of"]

PROTOCOL_CLAIMS = frozenset({"iss", "aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash",
                             "azp", "auth_time", "sid", "jti", "acr", "amr", "s_hash"})
"""Claims about the token itself, not the user: never traits."""
_MAX_TRAITS = 64
_MAX_VALUES = 256
_MAX_VALUE_LENGTH = 1024


def claim_values(claims: Mapping[str, Any], claim: str) -> tuple[str, ...]:
    """The claim as strings: a scalar gives one, a list its scalars; anything else nothing."""
    value = claims.get(claim)
    items: Sequence[Any] = value if isinstance(value, list) else [value]
    out = []
    for item in items[:_MAX_VALUES]:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, str | int | float) and len(str(item)) <= _MAX_VALUE_LENGTH:
            out.append(str(item))
    return tuple(out)


def _matches(pattern: str, value: str) -> bool:
    if "*" not in pattern:
        return pattern == value
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.DOTALL) is not None


def mapped_roles(mappings: Sequence[ClaimMapping], claims: Mapping[str, Any]) -> list[str]:
    """The roles ``mappings`` give for ``claims``, in order, without repeats."""
    roles: dict[str, None] = {}
    for mapping in mappings:
        if any(_matches(mapping.value, v) for v in claim_values(claims, mapping.claim)):
            roles.update(dict.fromkeys(mapping.roles))
    return list(roles)


def traits_of(claims: Mapping[str, Any]) -> dict[str, list[str]]:
    """The user's traits (``external.<claim>``) from the claims."""
    traits: dict[str, list[str]] = {}
    for claim in sorted(claims):
        if claim in PROTOCOL_CLAIMS or len(traits) >= _MAX_TRAITS or len(claim) > 128:
            continue
        values = claim_values(claims, claim)
        if values:
            traits[claim] = list(values)
    return traits


def username_of(claims: Mapping[str, Any], username_claim: str) -> str:
    """The Limen user name the claims give; ``SSOFailure`` when it is missing or invalid."""
    value = claims.get(username_claim)
    if not isinstance(value, str) or not value:
        raise SSOFailure("no_username", f"the ID token has no {username_claim!r} claim to "
                         "name the user")
    if username_claim == "email" and claims.get("email_verified") is False:
        raise SSOFailure("email_not_verified", "the provider has not verified the e-mail "
                         "address that would name the user")
    name = value.strip().lower()
    if not NAME_PATTERN.fullmatch(name):
        raise SSOFailure("bad_username", f"the {username_claim!r} claim is not a valid Limen "
                         "user name (lower-case letters, digits, '.', '_', '@', '-')")
    return name
