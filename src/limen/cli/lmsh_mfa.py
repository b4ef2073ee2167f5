"""``lmsh mfa``: the logged-in user's second factors.

::

    lmsh mfa ls [-o json]                       the authenticator app (otp) and security keys
    lmsh mfa add --type webauthn --name KEY     register a FIDO2 security key (touch it)
    lmsh mfa rm NAME                            remove one (not the last while the cluster
                                                requires a second factor)

The key is the first USB FIDO2 key; ``LMSH_WEBAUTHN_DEVICE=/path/key.json`` names a software
key instead, for tests and automation only (``limen.client.webauthn_softkey``). Registered on
the ``lmsh`` group by ``limen.cli.lmsh``; the work is in ``limen.client.webauthn_keys``.
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
@OUTPUT_OPTION
@handle_errors
def add(kind: str, name: str, output: str) -> None:
    """Register a security key as a second factor."""
    store = ProfileStore()
    added = asyncio.run(add_key(store, store.current_valid(), name,
                                lambda text: click.echo(text, err=True)))
    if output != "text":
        emit_documents([added], output)
    else:
        click.echo(f"Security key {added['name']} added.")


@mfa.command("rm")
@click.argument("name")
@handle_errors
def rm(name: str) -> None:
    """Remove the second factor NAME (otp: the authenticator app)."""
    store = ProfileStore()
    removed = asyncio.run(remove_factor(store, store.current_valid(), name))
    click.echo(f"Second factor {removed['name']} removed.")
