"""What every single sign-on login shares: where the provider sends the browser back (lmsh's
loopback listener, or the proxy's web callback for a web UI login, which finishes only with the
key the proxy started it with), and, once the provider has said who the person is: refuse
a name a local user has, refuse when no role is mapped (or none of the mapped roles exists),
cap the lifetime with the connector's ``max_session_ttl``, issue the certificates for the key
bound to the login's state, and audit refusals as ``user.login`` with ``success: false``, the
method (``oidc``, ``github``), the connector, the stage and the refusal's reason (never a
token, code, state or secret).

Called by :class:`limen.auth.sso.oidc.OIDCLogins` and
:class:`limen.auth.sso.github.GitHubLogins`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from limen.api.resources import Kind, Resource
from limen.auth.core import AuthServer, LoginResult
from limen.auth.sso.errors import SSOFailure
from limen.auth.sso.pending import PendingLogin
from limen.errors import BadParameter, LimenError

__all__ = ["audit_refusal", "check_web_key", "issue_sso_login", "redirect_uri_for"]


def redirect_uri_for(connector: str, redirect_url: str, web_redirect_url: str, *,
                     web: bool, port: int) -> str:
    """Where the provider sends the browser back: the proxy's web callback for a web UI
    login (refused when the connector has none), else lmsh's loopback listener at ``port``."""
    if web:
        if not web_redirect_url:
            raise SSOFailure("no_web_login", f"connector {connector!r} has no "
                             "web_redirect_url: it cannot be used from the web UI")
        return web_redirect_url
    if not 0 < port < 65536:
        raise BadParameter("port must be the client's loopback listener port")
    parts = urlsplit(redirect_url)
    host = parts.hostname or "127.0.0.1"
    if parts.port is not None:  # the schema refuses a port; an older object is refused here
        raise BadParameter("the connector's redirect_url names a port; remove it")
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(("http", netloc, parts.path or "/callback", "", ""))


def check_web_key(login: PendingLogin, public_key: str) -> None:
    """A web UI login finishes only with the key the proxy started it with: the proxy holds
    it for the browser that started the login (its cookie), and sends none for any other."""
    if not login.web:
        return
    if not public_key or not hmac.compare_digest(public_key.encode(),
                                                 login.public_key.encode()):
        raise SSOFailure("wrong_browser", "this login was started in another browser (or on "
                         "another proxy); start again")


async def issue_sso_login(auth: AuthServer, login: PendingLogin, *, connector: str,
                          max_session_ttl: timedelta | None, user: str, roles: Sequence[str],
                          traits: Mapping[str, list[str]], unmapped: str) -> LoginResult:
    """Certificates for ``user`` with ``roles`` and ``traits``; ``unmapped`` is the refusal's
    message when ``roles`` is empty."""
    if await auth.store.find(Kind.USER, user) is not None:
        raise SSOFailure("local_user_exists", f"{user!r} is a local user of this cluster; "
                         "a single sign-on login cannot act as it")
    if not roles:
        raise SSOFailure("no_roles", unmapped)
    missing = [r for r in roles if await auth.store.find(Kind.ROLE, r) is None]
    if len(missing) == len(roles):
        raise SSOFailure("no_roles", f"the roles connector {connector!r} maps you to "
                         f"do not exist: {', '.join(missing)}")
    ttl = timedelta(seconds=login.ttl_seconds) if login.ttl_seconds else None
    if max_session_ttl is not None:
        ttl = min(ttl or max_session_ttl, max_session_ttl)
    sso_user = Resource(Kind.USER, user, spec={"roles": list(roles), "traits": dict(traits)})
    certs = await auth.issue_for_user(sso_user, login.public_key, ttl)
    return await auth.login_result(certs)


async def audit_refusal(auth: AuthServer, method: str, connector: str, err: LimenError, *,
                        remote_addr: str, stage: str, user: str = "") -> None:
    """The ``user.login`` failure event of a refused single sign-on step."""
    reason = err.reason if isinstance(err, SSOFailure) else type(err).__name__
    fields: dict[str, Any] = {"method": method, "connector": connector, "stage": stage,
                              "reason": reason, "error": str(err)[:300],
                              "remote_addr": remote_addr}
    await auth.emit("user.login", success=False, user=user or None, **fields)
