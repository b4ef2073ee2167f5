"""``lmsh apps``: internal web applications through Limen (like ``tsh apps``).

::

    lmsh apps ls [-o json]        the online apps your roles admit, with their addresses
    lmsh apps login NAME          a certificate for app NAME on disk (with the key curl reads)
    lmsh apps config NAME         the curl flags that reach it: --cert --key --cacert URL
    lmsh apps logout [NAME]       removes the app certificate(s)

``apps`` is registered on the ``lmsh`` group by ``limen.cli.lmsh``.
"""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors, print_table
from limen.cli.lmctl_format import labels_text
from limen.client.app_access import curl_flags, forget_apps, list_apps, login_app
from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi

__all__ = ["apps"]


def _logged_in() -> tuple[ProfileStore, Profile]:
    store = ProfileStore()
    return store, store.current_valid()


async def _apps(store: ProfileStore, profile: Profile) -> list[dict[str, Any]]:
    api = WebApi.for_profile(store, profile)
    try:
        return await list_apps(api)
    finally:
        await api.close()


@click.group()
def apps() -> None:
    """Web applications: list, log in (a certificate for curl), log out."""


@apps.command("ls")
@OUTPUT_OPTION
@handle_errors
def ls(output: str) -> None:
    """The online apps your roles admit."""
    store, profile = _logged_in()
    items = asyncio.run(_apps(store, profile))
    if output != "text":
        emit_documents(items, output, as_list=True)
        return
    if not items:
        click.echo("no app you may use is online", err=True)
        return
    print_table(["NAME", "ADDRESS", "DESCRIPTION", "LABELS"], [
        (i["name"], i.get("public_addr") or "-", i.get("description") or "-",
         labels_text(i.get("labels") or {}))
        for i in items])


@apps.command("login")
@click.argument("name")
@handle_errors
def login(name: str) -> None:
    """Log in to app NAME: a certificate that curl (or a browser) presents to the proxy."""
    store, profile = _logged_in()
    info = asyncio.run(login_app(store, profile, name))
    click.echo(f"Logged in to app {name} ({info['url']}) until {info['expires']}.\n"
               f"  curl {shlex.join(curl_flags(store, profile, name))}")


@apps.command("config")
@click.argument("name")
@handle_errors
def config(name: str) -> None:
    """Print the curl flags that reach app NAME (after lmsh apps login NAME)."""
    store = ProfileStore()
    click.echo(shlex.join(curl_flags(store, store.current(), name)))


@apps.command("logout")
@click.argument("name", required=False)
@handle_errors
def logout(name: str | None) -> None:
    """Forget app NAME (every app without NAME)."""
    store = ProfileStore()
    removed = forget_apps(store, store.current(), [name] if name else None)
    click.echo(f"Logged out of {', '.join(removed) or 'no app'}.")
