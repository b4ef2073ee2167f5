"""``lmctl users``: add, invite, ls, update, reset, unlock, rm (like ``tctl users``).

Users declared in Git or Kubernetes are changed there: ``update`` and ``rm`` refuse them with
where to change them; ``invite``, ``reset`` and ``unlock`` only touch auth's secrets of the
user, so they work for every user. Registered on the ``lmctl`` group by ``limen.cli.lmctl``.
"""

from __future__ import annotations

from typing import Any

import click

from limen.cli.admin_api import AdminApi
from limen.cli.common import OUTPUT_OPTION, emit_documents, emit_listing, handle_errors
from limen.cli.lmctl_format import USER_HEADERS, user_rows
from limen.cli.lmctl_run import csv_list, run_admin, seconds
from limen.errors import BadParameter

__all__ = ["users"]

TTL_OPTION = click.option("--ttl", default="1h", show_default=True,
                          help="How long the sign-up link works (at most 48h).")


@click.group()
def users() -> None:
    """Local users: add, invite, ls, update, reset, unlock, rm."""


def _print_link(result: dict[str, str], name: str, output: str, *, reset: bool = False) -> None:
    if output != "text":
        emit_documents([result], output)
        return
    first = (f"User {name!r} has no password or authenticator any more; a new one-time "
             "sign-up link:" if reset else
             f"User {name!r} can now sign up (the link works once):")
    click.echo(f"{first}\n  {result['url']}\n"
               f"or: lmsh signup --proxy {result['url'].split('/')[2]} --token {result['token']}")


@users.command("add")
@click.argument("name")
@click.option("--roles", required=True, help="Comma-separated role names.")
@click.option("--logins", default="", help="Comma-separated Unix logins (the logins trait).")
@TTL_OPTION
@OUTPUT_OPTION
@handle_errors
def users_add(name: str, roles: str, logins: str, ttl: str, output: str) -> None:
    """Create a user and print a one-time sign-up link."""
    role_list, login_list, ttl_seconds = csv_list(roles), csv_list(logins), seconds(ttl)
    _print_link(run_admin(lambda admin: admin.add_user(name, role_list, login_list,
                                                       ttl_seconds)), name, output)


@users.command("invite")
@click.argument("name")
@TTL_OPTION
@OUTPUT_OPTION
@handle_errors
def users_invite(name: str, ttl: str, output: str) -> None:
    """A fresh one-time sign-up link for an existing user (e.g. one declared in Git)."""
    ttl_seconds = seconds(ttl)
    _print_link(run_admin(lambda admin: admin.invite(name, ttl_seconds)), name, output)


@users.command("ls")
@OUTPUT_OPTION
@handle_errors
def users_ls(output: str) -> None:
    """Users with their roles, logins, origin and sign-up/lock status."""
    found = run_admin(lambda admin: admin.list_users())
    emit_listing(found, output, USER_HEADERS, user_rows)


@users.command("update")
@click.argument("name")
@click.option("--set-roles", help="Replace the user's roles: comma-separated role names.")
@click.option("--set-logins", help="Replace the user's Unix logins: comma-separated "
                                   "('' for none).")
@OUTPUT_OPTION
@handle_errors
def users_update(name: str, set_roles: str | None, set_logins: str | None,
                 output: str) -> None:
    """Replace a user's roles and/or logins (users made with lmctl; Git's in Git)."""
    if set_roles is None and set_logins is None:
        raise BadParameter("nothing to update: give --set-roles and/or --set-logins")
    roles = None if set_roles is None else csv_list(set_roles)
    if roles is not None and not roles:
        raise BadParameter("--set-roles needs at least one role")
    logins = None if set_logins is None else csv_list(set_logins)
    row = run_admin(lambda admin: admin.update_user(name, roles, logins))
    if output != "text":
        emit_documents([row], output)
        return
    click.echo(f"User {name!r} updated: roles {','.join(row['roles']) or '-'}, "
               f"logins {','.join(row['logins']) or '-'}")


@users.command("reset")
@click.argument("name")
@TTL_OPTION
@OUTPUT_OPTION
@handle_errors
def users_reset(name: str, ttl: str, output: str) -> None:
    """Clear a user's password and authenticator and print a new one-time sign-up link."""
    ttl_seconds = seconds(ttl)
    _print_link(run_admin(lambda admin: admin.reset_user(name, ttl_seconds)), name, output,
                reset=True)


@users.command("unlock")
@click.argument("name")
@handle_errors
def users_unlock(name: str) -> None:
    """Lift a login lockout (and forget the failed logins counting towards one)."""
    was_locked = run_admin(lambda admin: admin.unlock_user(name))
    click.echo(f"User {name!r} unlocked." if was_locked
               else f"User {name!r} was not locked; failed logins cleared.")


@users.command("rm")
@click.argument("name")
@handle_errors
def users_rm(name: str) -> None:
    """Delete a user made with lmctl (and its password and authenticator)."""

    async def remove(admin: AdminApi) -> Any:
        await admin.remove_user(name)

    run_admin(remove)
    click.echo(f"User {name!r} deleted.")
