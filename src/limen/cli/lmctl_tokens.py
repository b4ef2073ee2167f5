"""``lmctl tokens``: add, ls, rm join tokens for agents, proxies and trusted clusters (like
``tctl tokens``). A token is single use unless made with ``--reusable`` (``ls`` shows which in
its USE column); trusted_cluster tokens are always single use. Registered on the ``lmctl``
group by ``limen.cli.lmctl``.
"""

from __future__ import annotations

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, emit_listing, handle_errors
from limen.cli.lmctl_format import TOKEN_HEADERS, mask_token, token_rows
from limen.cli.lmctl_run import run_admin, seconds
from limen.config import parse_labels

__all__ = ["tokens"]


@click.group()
def tokens() -> None:
    """Join tokens for agents and trusted clusters."""


@tokens.command("add")
@click.option("--type", "token_type", required=True,
              type=click.Choice(["node", "db", "kube", "app", "proxy", "trusted_cluster"]))
@click.option("--ttl", default="30m", show_default=True, help="Lifetime, e.g. 30m, 1h.")
@click.option("--labels", default="", help="Labels for what joins with it: k=v,k2=v2.")
@click.option("--reusable", is_flag=True,
              help="Let it join any number of hosts until it expires (default: single use).")
@OUTPUT_OPTION
@handle_errors
def tokens_add(token_type: str, ttl: str, labels: str, reusable: bool, output: str) -> None:
    """Create a join token (shown once; single use unless --reusable)."""
    ttl_seconds, label_map = seconds(ttl), parse_labels(labels)
    result = run_admin(lambda admin: admin.add_token(token_type, ttl_seconds, label_map,
                                                     single_use=not reusable))
    if output != "text":
        emit_documents([result], output)
        return
    use = "single use" if result.get("single_use", not reusable) else "reusable"
    click.echo(f"The {token_type} token {result['token']} ({use}) expires at "
               f"{result['expires']}.\nCA pin: {result['ca_pin']}")
    if token_type in ("node", "proxy"):
        where = (f"--proxy {result.get('proxy', 'PROXY_HOST:3080')}" if token_type == "node"
                 else "--auth-server AUTH_HOST:3025")
        click.echo(f"\nOn the {token_type}'s machine:\n  limen start --roles {token_type} "
                   f"--token {result['token']} --ca-pin {result['ca_pin']} {where}")


@tokens.command("ls")
@OUTPUT_OPTION
@handle_errors
def tokens_ls(output: str) -> None:
    """Tokens not yet expired (or used): masked, type, expiry, use, labels."""
    found = run_admin(lambda admin: admin.list_tokens())
    emit_listing(found, output, TOKEN_HEADERS, token_rows)


@tokens.command("rm")
@click.argument("token")
@handle_errors
def tokens_rm(token: str) -> None:
    """Delete a token: the token itself, its id, or a prefix of either (as ls shows it)."""
    row = run_admin(lambda admin: admin.remove_token(token))
    click.echo(f"Token {mask_token(row.get('hint'))} (id {row['id']}, {row['type']}) deleted.")
