"""Authentication for the Kubernetes API emulator: bearer tokens and client certificates.

Used by ``apiserver.py`` when the emulator runs with an :class:`Authenticator` (the
``KubeAPI(..., authenticate=True)`` mode of ``fixtures.py``, which also registers the tokens
it mints). As kube-apiserver with anonymous requests disabled: a bearer token must be one the
authenticator knows (a token file or service-account token), or else the client presents a
certificate signed by the emulator's CA (checked by TLS; ``CN`` is the username, each ``O`` a
group). Anything else is ``401 Unauthorized``. Every authenticated user is also in
``system:authenticated``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .errors import ApiError
from .users import ALL_AUTHENTICATED, UserInfo

__all__ = ["Authenticator", "unauthorized"]


def unauthorized() -> ApiError:
    """The answer kube-apiserver gives to missing or unknown credentials."""
    return ApiError(401, "Unauthorized", "Unauthorized")


def _with_authenticated(user: UserInfo) -> UserInfo:
    if ALL_AUTHENTICATED in user.groups:
        return user
    return replace(user, groups=(*user.groups, ALL_AUTHENTICATED))


def _certificate_user(peercert: Mapping[str, Any]) -> UserInfo | None:
    """The user of a verified client certificate (``ssl.SSLSocket.getpeercert()`` form)."""
    names: list[str] = []
    groups: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(value)
            elif key == "organizationName":
                groups.append(value)
    if not names or not names[0]:
        return None
    return UserInfo(names[0], groups=tuple(groups))


@dataclass
class Authenticator:
    """Known bearer tokens (token -> user); client certificates need no registration."""

    tokens: dict[str, UserInfo] = field(default_factory=dict)

    def authenticate(
        self, authorization: str | None, peercert: Mapping[str, Any] | None
    ) -> UserInfo:
        """The user behind the request's credentials, or ``ApiError`` 401."""
        if authorization is not None:
            scheme, _, token = authorization.strip().partition(" ")
            user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if user is None:
                raise unauthorized()
            return _with_authenticated(user)
        if peercert:
            user = _certificate_user(peercert)
            if user is not None:
                return _with_authenticated(user)
        raise unauthorized()
