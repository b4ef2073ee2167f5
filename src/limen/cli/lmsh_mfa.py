"""``lmsh mfa``: the logged-in user's second factors.

::

    lmsh mfa ls [-o json]                       the authenticator app (otp) and security keys
    lmsh mfa add --type webauthn --name KEY [--otp CODE]   register a FIDO2 security key
    lmsh mfa rm NAME [--otp CODE]               remove one (not the last while the cluster
                                                requires a second factor)

Adding and removing are confirmed with a second factor you have: a registered key (touch it;
then the new key when adding), or the app's code (``--otp``, else asked for). The keys are the
USB FIDO2 keys plugged in; ``LMSH_WEBAUTHN_DEVICE=/path/key.json[:/path/other.json]`` names
software keys instead, for tests and automation only (``limen.client.webauthn_softkey``).
Registered on the ``lmsh`` group by ``limen.cli.lmsh``; the work is in
``limen.client.webauthn_keys``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, emit_listing, handle_errors
from limen.client.profile import ProfileStore
from limen.client.webauthn_keys import add_key, list_factors, remove_factor

__all__ = ["mfa"]

HEADERS = ("NAME", "TYPE", "ADDED", "LAST USED")
OTP_OPTION = click.option("--otp", default="", metavar="CODE",
                          help="Confirm with the authenticator app's current code (else with "
                               "a registered security key, or the code is asked for).")


def _say(text: str) -> None:
    click.echo(text, err=True)


def _ask_code() -> str:
    return str(click.prompt("Code shown by your authenticator app", err=True))


def _when(value: object) -> str:
    if not isinstance(value, int | float):
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _rows(items: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[str(i["name"]), str(i["type"]), _when(i.get("added")), _when(i.get("last_used"))]
            for i in items]


@click.group()
def mfa() -> None:
    """Your second factors: authenticator app and security keys."""


@mfa.command("ls")
@OUTPUT_OPTION
@handle_errors
def ls(output: str) -> None:
    """List your second factors."""
    store = ProfileStore()
    emit_listing(asyncio.run(list_factors(store, store.current_valid())), output, HEADERS,
                 _rows)


@mfa.command("add")
@click.option("--type", "kind", type=click.Choice(["webauthn"]), required=True,
              help="What to add: webauthn, a FIDO2 security key.")
@click.option("--name", required=True, help="A name for the key (e.g. yubikey).")
@OTP_OPTION
@OUTPUT_OPTION
@handle_errors
def add(kind: str, name: str, otp: str, output: str) -> None:
    """Register a security key as a second factor."""
    store = ProfileStore()
    added = asyncio.run(add_key(store, store.current_valid(), name, otp=otp,
                                ask_code=_ask_code, say=_say))
    if output != "text":
        emit_documents([added], output)
    else:
        click.echo(f"Security key {added['name']} added.")


@mfa.command("rm")
@click.argument("name")
@OTP_OPTION
@handle_errors
def rm(name: str, otp: str) -> None:
    """Remove the second factor NAME (otp: the authenticator app)."""
    store = ProfileStore()
    removed = asyncio.run(remove_factor(store, store.current_valid(), name, otp=otp,
                                        ask_code=_ask_code, say=_say))
    click.echo(f"Second factor {removed['name']} removed.")
