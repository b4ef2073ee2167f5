"""``lmsh login``: where it logs in when flags are left out, the check of its ``--ca-pin``,
and the login itself (password and one-time code or a security key with ``--mfa webauthn``
(``limen.client.webauthn``), an approved access request, or single sign-on with
``--auth NAME``: ``limen.client.sso_login``).

Like ``tsh login``: with no ``--proxy`` the current profile's proxy and user are used again;
``--proxy`` alone takes the user of that proxy's saved profile. Registered on the ``lmsh``
group by ``limen.cli.lmsh`` (loaded when it runs).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from datetime import UTC, datetime
from typing import Any

import click

from limen.api.durations import parse_duration
from limen.ca.keys import (
    PrivateKey,
    generate_private_key,
    private_key_to_openssh,
    public_key_to_openssh,
)
from limen.cli.common import handle_errors
from limen.cli.lmsh_input import read_password
from limen.cli.lmsh_profile_view import print_profile
from limen.cli.lmsh_requests import logged_in_profile
from limen.client.access_requests import login_with_request
from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi
from limen.errors import BadParameter, NotFound

__all__ = ["check_pin_format", "login", "login_target"]

_PIN = re.compile(r"sha256:[0-9a-f]{64}")


def login_target(store: ProfileStore, proxy: str | None, user: str | None) -> tuple[str, str]:
    """The (proxy, user) to log in as: the flags, completed from the saved profiles."""
    if proxy and user:
        return proxy, user
    try:
        saved = store.load(proxy) if proxy else store.current()
    except NotFound:
        if proxy:
            raise BadParameter(f"no saved profile for {proxy}: "
                               f"run lmsh login --proxy {proxy} --user NAME") from None
        raise BadParameter("no saved profile to log in again: "
                           "run lmsh login --proxy HOST:PORT --user NAME") from None
    return saved.proxy, user or saved.user


def check_pin_format(pin: str) -> None:
    """``BadParameter`` unless ``pin`` is ``sha256:`` and 64 hex digits (``lmctl status``)."""
    if not _PIN.fullmatch(pin.strip().lower()):
        raise BadParameter("--ca-pin must be 'sha256:' followed by 64 hex digits "
                           "(lmctl status shows the cluster's TLS CA pin)")


@click.command()
@click.option("--proxy", help="Proxy web address HOST:PORT (default: the current profile's).")
@click.option("--user", help="Your Limen user name (default: the current profile's).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--otp", default="", help="The current one-time code (asked for when needed).")
@click.option("--mfa", type=click.Choice(["otp", "webauthn"]), default="otp",
              help="Second factor: the authenticator app's code (otp, default) or a FIDO2 "
                   "security key (webauthn; LMSH_WEBAUTHN_DEVICE names a software key for "
                   "tests and automation).")
@click.option("--ttl", default="", help="Certificate lifetime, e.g. 8h (capped by your roles).")
@click.option("--ca-pin", default="", metavar="sha256:HEX",
              help="Trust the proxy only if its TLS CA has this pin (lmctl status shows it); "
                   "the CA is saved for later logins.")
@click.option("--insecure", is_flag=True, help="Do not verify the proxy's certificate.")
@click.option("--request-id", default="", metavar="ID",
              help="Add the roles of your approved access request (lmsh request ls) until it "
                   "expires; while logged in, no password is asked.")
@click.option("--auth", "connector", default="", metavar="NAME",
              help="Log in with single sign-on through the connector NAME (an OIDCConnector "
                   "or a GitHubConnector): "
                   "lmsh prints the provider's URL and waits for the browser to come back.")
@click.option("--no-browser", is_flag=True,
              help="With --auth: only print the URL, do not open a browser.")
@handle_errors
def login(proxy: str | None, user: str | None, password_stdin: bool, otp: str, mfa: str,
          ttl: str, ca_pin: str, insecure: bool, request_id: str, connector: str,
          no_browser: bool) -> None:
    """Log in and receive short-lived SSH and X.509 certificates.

    With no --proxy and --user, logs in again where the current profile is."""
    ttl_seconds = int(parse_duration(ttl).total_seconds()) if ttl else None
    store = ProfileStore()
    if connector:
        if user or password_stdin or otp or request_id:
            raise BadParameter("with --auth the identity provider says who you are: leave out "
                               "--user, --password-stdin, --otp and --request-id")
        if ca_pin:
            check_pin_format(ca_pin)
        print_profile(asyncio.run(_sso(store, proxy or login_target(store, None, None)[0],
                                       connector, ttl_seconds, ca_pin, insecure, no_browser)))
        return
    proxy, user = login_target(store, proxy, user)
    current = logged_in_profile(store, proxy, user) if request_id and not password_stdin \
        else None
    if current is not None:
        print_profile(asyncio.run(login_with_request(store, current, request_id, ttl_seconds)))
        return
    if ca_pin:
        check_pin_format(ca_pin)
    known_cas = {} if ca_pin else store.trusted_cas(proxy)

    async def run() -> Profile:
        api, ping = await WebApi.connect(proxy, known_cas=known_cas, ca_pin=ca_pin,
                                         insecure=insecure)
        try:
            password = read_password(password_stdin, "Password")
            code, webauthn = otp, None
            if ping.get("second_factor") == "otp" and mfa == "webauthn":
                webauthn = await _security_key(api, proxy, user, password)
            elif ping.get("second_factor") == "otp" and not code:
                code = click.prompt("One-time code", hide_input=False)
            key = generate_private_key()
            public = public_key_to_openssh(key.public_key(), f"{user}@{ping['cluster']}")
            answer = await api.login(user, password, code, public, ttl_seconds, request_id,
                                     webauthn=webauthn)
        finally:
            await api.close()
        return await _save(store, proxy, ping, key, public, answer)

    print_profile(asyncio.run(run()))


async def _security_key(api: WebApi, proxy: str, user: str, password: str) -> dict[str, Any]:
    """The security key's answer to the challenge the proxy gives once the password is right."""
    from limen.client.webauthn import assert_key  # fido2: loaded only when used

    begun = await api.webauthn_login_begin(user, password)
    return await asyncio.to_thread(assert_key, proxy, begun["webauthn"],
                                   lambda text: click.echo(text, err=True))


async def _sso(store: ProfileStore, proxy: str, connector: str, ttl_seconds: int | None,
               ca_pin: str, insecure: bool, no_browser: bool) -> Profile:
    """``lmsh login --auth``: single sign-on, then the profile as a password login writes."""
    from limen.client.sso_login import sso_login

    def show(url: str) -> None:
        click.echo("Log in at your identity provider; open this URL in a browser:")
        click.echo(url)
        if not no_browser and _has_browser():
            import webbrowser

            webbrowser.open(url)

    known_cas = {} if ca_pin else store.trusted_cas(proxy)
    api, ping = await WebApi.connect(proxy, known_cas=known_cas, ca_pin=ca_pin,
                                     insecure=insecure)
    try:
        key = generate_private_key()
        public = public_key_to_openssh(key.public_key(), f"{connector}@{ping['cluster']}")
        answer = await sso_login(api, connector, public, ttl_seconds, show)
    finally:
        await api.close()
    return await _save(store, proxy, ping, key, public, answer)


async def _save(store: ProfileStore, proxy: str, ping: dict[str, Any], key: PrivateKey,
                public: str, answer: dict[str, Any]) -> Profile:
    """Write the login's key, certificates and trusted CAs as the current profile, and load
    the key into ssh-agent when one runs."""
    profile = Profile(proxy=proxy, user=answer["user"], cluster=answer["cluster"],
                      expires=answer["expires"], roles=tuple(answer["roles"]),
                      logins=tuple(answer["logins"]), ssh_proxy=ping.get("ssh_proxy", ""))
    private = private_key_to_openssh(key).encode()
    store.save_login(
        profile, private_key=private, public_key=(public + "\n").encode(),
        ssh_cert=(answer["ssh_cert"] + "\n").encode(), tls_cert=answer["tls_cert"].encode(),
        tls_cas={c: pem.encode() for c, pem in answer["tls_cas"].items()},
        host_ca_lines=answer["known_hosts"])
    from limen.client.sshagent import add_to_agent  # asyncssh: loaded only when used

    lifetime = int((profile.expires_at - datetime.now(UTC)).total_seconds())
    if await add_to_agent(private, answer["ssh_cert"].encode(), lifetime):
        click.echo("Key and certificate added to ssh-agent.")
    return profile


def _has_browser() -> bool:
    """A graphical browser can open (macOS, Windows, or a display on other systems): a text
    browser would take over the terminal lmsh is printing to."""
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
