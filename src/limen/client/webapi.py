"""The client side of the proxy's web API (``/v1/webapi/*``), with the TLS trust rules of lmsh.

Trust, in order: the cluster CAs remembered in ``~/.limen`` for this proxy; else a CA pin
(``sha256:...`` from a sign-up link or ``--ca-pin``), checked against the CA the proxy presents
before anything secret is sent; else ``--insecure`` (first contact, tests); else the system
trust store. With cluster CAs, the server must also show the proxy's Limen identity (checked
in the TLS handshake, ``limen.ca.peer_role``): a node's or another agent's certificate, signed
by the same CA, is refused before a password is written. Called by the ``lmsh`` commands.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from cryptography import x509

from limen.ca.identity import SystemRole
from limen.ca.keys import pin_matches
from limen.ca.peer_role import PeerRoleRefused, require_server_role, trust_map_from_pems
from limen.client.profile import Profile, ProfileStore
from limen.client.profile_tls import profile_context
from limen.errors import AccessDenied, ConnectionProblem, TlsVerificationFailed
from limen.net.cli_http import CliApiClient

__all__ = ["WebApi", "client_ssl_context", "get_as_current_user"]


def _untrusted(proxy: str, *, saved: bool) -> str:
    why = ("is not signed by the CA saved for it" if saved
           else "is signed by no CA this machine trusts")
    return (f"the TLS certificate of the proxy {proxy} {why}: give the cluster's CA pin once "
            "with --ca-pin sha256:... (lmctl status shows it; sign-up links carry it)")


def client_ssl_context(ca_pems: Mapping[str, bytes] | None, insecure: bool) -> ssl.SSLContext:
    if insecure and not ca_pems:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ca_pems:
        context = ssl.create_default_context(
            cadata="".join(pem.decode() for pem in ca_pems.values())
        )
        require_server_role(context, SystemRole.PROXY, trust_map_from_pems(ca_pems))
    else:
        context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _not_a_proxy(proxy: str, err: TlsVerificationFailed) -> AccessDenied | None:
    cause = err.certificate_error
    if not isinstance(cause, PeerRoleRefused):
        return None
    return AccessDenied(f"{proxy} is not the cluster's proxy ({cause.reason}); "
                        "refusing to continue")


class WebApi:
    """Calls to one proxy. Use ``await WebApi.connect(...)`` to apply the trust rules."""

    def __init__(self, proxy: str, context: ssl.SSLContext) -> None:
        self.proxy = proxy
        self.http = CliApiClient(f"https://{proxy}", context)

    @classmethod
    async def connect(
        cls, proxy: str, *, known_cas: Mapping[str, bytes] | None = None,
        ca_pin: str = "", insecure: bool = False,
    ) -> tuple[WebApi, dict[str, Any]]:
        """Open a trusted connection and return it with the proxy's ping answer."""
        if not known_cas and ca_pin:
            probe = cls(proxy, client_ssl_context(None, insecure=True))
            try:
                ping = await probe.ping()
            finally:
                await probe.close()
            presented = ping["tls_ca"].encode()
            if not pin_matches(ca_pin, x509.load_pem_x509_certificate(presented)):
                raise AccessDenied(
                    f"the proxy {proxy} presented a CA that does not match the pin {ca_pin}; "
                    "refusing to continue"
                )
            known_cas = {ping["cluster"]: presented}
        api = cls(proxy, client_ssl_context(known_cas, insecure))
        try:
            ping = await api.ping()
        except TlsVerificationFailed as err:
            await api.close()
            refused = _not_a_proxy(proxy, err)
            if refused is not None:
                raise refused from None
            raise ConnectionProblem(_untrusted(proxy, saved=bool(known_cas))) from err
        except BaseException:
            await api.close()
            raise
        return api, ping

    @classmethod
    def for_profile(cls, store: ProfileStore, profile: Profile) -> WebApi:
        """Calls made as the logged-in user: mutual TLS with the user's certificate, the
        proxy verified against the cluster CAs saved at login."""
        if not profile.is_valid():
            raise AccessDenied(f"your certificates expired at {profile.expires}: "
                               "run lmsh login again")
        return cls(profile.proxy, profile_context(store, profile))

    async def as_user(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET ``/v1/webapi/user/<path>``."""
        return await self.http.call("GET", f"/v1/webapi/user/{path}", params=params)

    async def as_user_post(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST ``/v1/webapi/user/<path>`` with a JSON ``body`` (e.g. ``db/certs``)."""
        return await self.http.call("POST", f"/v1/webapi/user/{path}", body)

    async def close(self) -> None:
        await self.http.close()

    async def ping(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.http.call("GET", "/v1/webapi/ping")
        return result

    async def signup_begin(self, token: str, password: str | None = None,
                           mfa: str = "otp") -> dict[str, Any]:
        """The link's user and the TOTP secret to enrol, or with ``mfa`` "webauthn" a security
        key's registration options (nothing is set yet; the link stays usable); with
        ``password``, its policy is checked too."""
        body = {"token": token, "mfa": mfa} | \
            ({"password": password} if password is not None else {})
        result: dict[str, Any] = await self.http.call("POST", "/v1/webapi/signup/begin", body)
        return result

    async def signup(self, token: str, password: str, otp: str | None,
                     webauthn: Mapping[str, Any] | None = None,
                     key_name: str = "") -> dict[str, Any]:
        """Finish the sign-up: password and (when required) the current code of the enrolled
        secret, or the security key's registration answer (``webauthn``, named
        ``key_name``); the server sets both and consumes the link, or changes nothing."""
        body: dict[str, Any] = {"token": token, "password": password} | \
            ({"otp": otp} if otp else {})
        if webauthn is not None:
            body |= {"webauthn": dict(webauthn), "key_name": key_name or "key"}
        result: dict[str, Any] = await self.http.call("POST", "/v1/webapi/signup", body)
        return result

    async def login(
        self, user: str, password: str, otp: str, public_key: str, ttl_seconds: int | None,
        request_id: str = "", webauthn: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Certificates for ``public_key``; with ``request_id``, carrying the roles of that
        approved access request of the user's; ``webauthn``: a security key's answer to the
        challenge of :meth:`webauthn_login_begin` instead of the one-time code ``otp``."""
        body: dict[str, Any] = {"user": user, "password": password, "otp": otp,
                                "public_key": public_key}
        if webauthn is not None:
            body["webauthn"] = dict(webauthn)
        if ttl_seconds:
            body["ttl_seconds"] = ttl_seconds
        if request_id:
            body["request_id"] = request_id
        result: dict[str, Any] = await self.http.call("POST", "/v1/webapi/login", body)
        return result

    async def webauthn_login_begin(self, user: str, password: str) -> dict[str, Any]:
        """The challenge of a login with a security key (``{"webauthn": options}``), given
        once the password is right."""
        result: dict[str, Any] = await self.http.call(
            "POST", "/v1/webapi/login/webauthn/begin", {"user": user, "password": password})
        return result


async def get_as_current_user(path: str) -> Any:
    """``GET /v1/webapi/user/<path>`` as the current profile's user, on a connection of its
    own (a command's single call)."""
    store = ProfileStore()
    api = WebApi.for_profile(store, store.current())
    try:
        return await api.as_user(path)
    finally:
        await api.close()
