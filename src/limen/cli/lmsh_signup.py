"""``lmsh signup``: choose a password with a one-time sign-up link and enrol the authenticator
app, confirmed with its current code before anything is stored. Registered on the ``lmsh`` group
by ``limen.cli.lmsh``.

    lmsh signup --link URL             password, QR code, then the app's code (asked again if
                                       wrong); the link works until a right code finishes it
    lmsh signup --link URL --show-totp [-o json]                    scripts: the enrolment only
    lmsh signup --link URL --password-stdin --otp CODE [-o json]    ... then finish with a code
    lmsh signup --link URL --mfa webauthn [--key-name NAME]   a FIDO2 security key instead of
                                       the app (touch it; LMSH_WEBAUTHN_DEVICE: a software key
                                       for tests and automation, limen.client.webauthn)

The server keeps the TOTP secret with the link (``/v1/webapi/signup/begin``) and sets the
password and the authenticator together, consuming the link, only when the code is right
(``/v1/webapi/signup``).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import segno

from limen.auth.credentials.otp import INVALID_REASON
from limen.auth.credentials.signup_tokens import parse_signup_url
from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors
from limen.cli.lmsh_input import read_code, read_password
from limen.client.profile import ProfileStore
from limen.client.webapi import WebApi
from limen.errors import AccessDenied, BadParameter

__all__ = ["qr_code_text", "signup"]

CODE_ATTEMPTS = 3
"""Codes ``lmsh signup`` asks for before it gives up (the link keeps working)."""

T = TypeVar("T")


def qr_code_text(uri: str) -> str:
    """``uri`` as a QR code drawn with Unicode half blocks (segno's compact terminal output)."""
    buffer = io.StringIO()
    segno.make(uri, error="m").terminal(out=buffer, compact=True, border=2)
    return buffer.getvalue()


class _Proxy:
    """One call at a time to the proxy, each on a fresh connection verified like the first
    (the CA pin of the link, a CA saved before, or --insecure): the user may take minutes
    between two of them."""

    def __init__(self, proxy: str, ca_pin: str, insecure: bool, store: ProfileStore) -> None:
        self.proxy, self.ca_pin, self.insecure, self.store = proxy, ca_pin, insecure, store
        self.ping: dict[str, Any] = {}

    def call(self, request: Callable[[WebApi], Awaitable[T]]) -> T:
        async def run() -> T:
            api, self.ping = await WebApi.connect(
                self.proxy, known_cas=self.store.trusted_cas(self.proxy), ca_pin=self.ca_pin,
                insecure=self.insecure)
            try:
                return await request(api)
            finally:
                await api.close()

        return asyncio.run(run())


def _show_enrolment(enrolment: dict[str, Any], *, err: bool) -> None:
    uri = enrolment["totp_uri"]
    click.echo("Scan this QR code with your authenticator app (TOTP), or type the secret:",
               err=err)
    try:
        click.echo(qr_code_text(uri), err=err, nl=False)
    except UnicodeEncodeError:
        click.echo("(no QR code: this terminal's encoding cannot draw it)", err=err)
    click.echo(f"  secret: {enrolment['totp_secret']}\n  URI:    {uri}", err=err)


def _document(answer: dict[str, Any]) -> dict[str, Any]:
    return {"user": answer["user"], "totp_secret": answer.get("totp_secret"),
            "totp_uri": answer.get("totp_uri")}


def _confirm(token: str, password: str,
             code: str | None) -> Callable[[WebApi], Awaitable[dict[str, Any]]]:
    return lambda api: api.signup(token, password, code)


def _finish(proxy: _Proxy, token: str, password: str, otp: str, *, err: bool) -> dict[str, Any]:
    """Confirm with ``otp``, or with codes asked for (a wrong one is asked for again)."""
    for attempt in range(1, CODE_ATTEMPTS + 1):
        code = otp or read_code(
            "Code shown by your authenticator app", err=err,
            on_eof="no one-time code given: sign-up not finished (the link still works)")
        try:
            return proxy.call(_confirm(token, password, code))
        except AccessDenied as refused:
            if str(refused) != INVALID_REASON:
                raise
            if otp or attempt == CODE_ATTEMPTS:
                raise AccessDenied(f"{INVALID_REASON}: sign-up not finished (the link still "
                                   "works; check the clock of the device)") from None
            click.echo("That code is not right (is the device's clock correct?); try again.",
                       err=err)
    raise AssertionError("unreachable")


def _register_key(remote: _Proxy, proxy: str, token: str, password: str,
                  options: dict[str, Any], key_name: str) -> dict[str, Any]:
    """Register the security key with the sign-up's options and finish with its answer."""
    from limen.client.webauthn import register_key  # fido2: loaded only when used

    answer = register_key(proxy, options, lambda text: click.echo(text, err=True))
    return remote.call(lambda api: api.signup(token, password, None, answer, key_name))


@click.command()
@click.option("--proxy", help="Proxy web address HOST:PORT (or use --link).")
@click.option("--token", help="The sign-up token.")
@click.option("--link", help="The whole sign-up link (carries the proxy and its CA pin).")
@click.option("--ca-pin", default="", help="sha256:... pin of the cluster's TLS CA.")
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin.")
@click.option("--otp", default="", metavar="CODE",
              help="The authenticator's current code (else asked for after the QR code).")
@click.option("--show-totp", is_flag=True,
              help="Only show the authenticator enrolment; finish later with --otp CODE.")
@click.option("--insecure", is_flag=True, help="Do not verify the proxy's certificate.")
@click.option("--mfa", type=click.Choice(["otp", "webauthn"]), default="otp",
              help="Second factor to enrol: the authenticator app (otp) or a FIDO2 security "
                   "key (webauthn).")
@click.option("--key-name", default="key", help="With --mfa webauthn: the key's name.")
@OUTPUT_OPTION
@handle_errors
def signup(proxy: str | None, token: str | None, link: str | None, ca_pin: str,
           password_stdin: bool, otp: str, show_totp: bool, insecure: bool, mfa: str,
           key_name: str, output: str) -> None:
    """Choose your password with a one-time sign-up link and enrol a second factor."""
    if link:
        parsed = parse_signup_url(link)
        proxy, token, ca_pin = parsed.proxy, parsed.token, ca_pin or (parsed.ca_pin or "")
    if not proxy or not token:
        raise BadParameter("signup needs --link, or --proxy and --token")
    if show_totp and (otp or password_stdin):
        raise BadParameter("--show-totp only shows the enrolment: it takes no password or code")
    store = ProfileStore()
    remote = _Proxy(proxy, ca_pin, insecure, store)
    machine = output != "text"
    if show_totp:
        enrolment = remote.call(lambda api: api.signup_begin(token))
        if machine:
            emit_documents([_document(enrolment)], output)
        elif enrolment.get("totp_secret"):
            _show_enrolment(enrolment, err=False)
            click.echo("Then finish with: lmsh signup --link ... --otp CODE")
        else:
            click.echo("This cluster asks for no second factor: run lmsh signup without "
                       "--show-totp.")
        return
    if mfa == "webauthn" and (otp or show_totp):
        raise BadParameter("--mfa webauthn enrols a security key: leave out --otp and "
                           "--show-totp")
    password = read_password(password_stdin, "New password", confirm=True)
    enrolment = remote.call(lambda api: api.signup_begin(token, password, mfa))
    if enrolment.get("webauthn"):
        result = _register_key(remote, proxy, token, password, enrolment["webauthn"], key_name)
    elif enrolment.get("totp_secret"):
        if not otp:
            _show_enrolment(enrolment, err=machine)
        result = _finish(remote, token, password, otp, err=machine)
    else:
        result = remote.call(_confirm(token, password, None))
    if ca_pin or not insecure:
        store.save_ca(proxy, remote.ping["cluster"], remote.ping["tls_ca"].encode())
    if machine:
        emit_documents([_document(result)], output)
        return
    factor = (" and your authenticator app is enrolled" if result.get("totp_secret")
              else f" and your security key {key_name} is registered"
              if enrolment.get("webauthn") else "")
    click.echo(f"Password set for {result['user']}{factor}.\n"
               f"Next: lmsh login --proxy {proxy} --user {result['user']}")
