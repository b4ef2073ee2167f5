"""``lmsh request``: ask for roles for a while, see requests, approve or deny them.

::

    lmsh request create --roles db-admin --reason "INC-42" [-o json]   prints the id
    lmsh request ls [-o json]            your requests and those you may review
    lmsh request review ID --approve|--deny [--reason TEXT]

Then ``lmsh login --request-id ID`` (``limen.cli.lmsh``) gets certificates with the approved
roles. Everything goes through the proxy's web API as the logged-in user
(``limen.client.access_requests``); auth decides and audits. ``request`` is registered on the
``lmsh`` group by ``limen.cli.lmsh``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, emit_listing, handle_errors
from limen.client.access_requests import create_request, list_requests, review_request
from limen.client.profile import Profile, ProfileStore
from limen.errors import BadParameter, NotFound

__all__ = ["logged_in_profile", "request"]

HEADERS = ("ID", "USER", "ROLES", "STATE", "EXPIRES", "REVIEWERS", "REASON")


def logged_in_profile(store: ProfileStore, proxy: str, user: str) -> Profile | None:
    """The saved profile of ``user`` at ``proxy`` when its certificates are still valid."""
    try:
        saved = store.load(proxy)
    except NotFound:
        return None
    return saved if saved.user == user and saved.is_valid() else None


def _rows(items: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[item["id"], item["user"], ",".join(item["roles"]), item["state"],
             item["expires"][:19], ",".join(r["author"] for r in item["reviews"]) or "-",
             item["reason"] or "-"] for item in items]


@click.group("request")
def request() -> None:
    """Access requests: roles for a while, with a second person's approval."""


@request.command("create")
@click.option("--roles", required=True, help="Roles to request, comma-separated.")
@click.option("--reason", default="", help="Why (shown to reviewers and in the audit log).")
@OUTPUT_OPTION
@handle_errors
def create(roles: str, reason: str, output: str) -> None:
    """Request roles; prints the request's id (give it to a reviewer)."""
    names = [r.strip() for r in roles.split(",") if r.strip()]
    if not names:
        raise BadParameter("--roles needs at least one role name")
    store = ProfileStore()
    created = asyncio.run(create_request(store, store.current(), names, reason))
    if output != "text":
        emit_documents([created], output)
        return
    click.echo(created["id"])
    click.echo(f"Request for {', '.join(created['roles'])} is {created['state']} until "
               f"{created['expires']}; once approved: lmsh login --request-id {created['id']}",
               err=True)


@request.command("ls")
@OUTPUT_OPTION
@handle_errors
def ls(output: str) -> None:
    """Your access requests and those you may review, newest first."""
    store = ProfileStore()
    emit_listing(asyncio.run(list_requests(store, store.current())), output, HEADERS, _rows)


@request.command("review")
@click.argument("request_id")
@click.option("--approve", is_flag=True, help="Approve the request.")
@click.option("--deny", is_flag=True, help="Deny the request.")
@click.option("--reason", default="", help="Why (kept with the review and audited).")
@OUTPUT_OPTION
@handle_errors
def review(request_id: str, approve: bool, deny: bool, reason: str, output: str) -> None:
    """Approve or deny someone else's access request."""
    if approve == deny:
        raise click.UsageError("give exactly one of --approve and --deny")
    store = ProfileStore()
    reviewed = asyncio.run(review_request(store, store.current(), request_id, approve, reason))
    if output != "text":
        emit_documents([reviewed], output)
        return
    click.echo(f"Access request {reviewed['id']} of {reviewed['user']} is now "
               f"{reviewed['state']}.")
