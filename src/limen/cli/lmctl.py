"""``lmctl``: the administrator's command line (like Teleport's ``tctl``).

``--data-dir DIR`` uses the admin identity the cluster running from DIR keeps there (or, when
none runs, DIR's store directly); ``--auth HOST:PORT -i DIR`` talks to that auth server with
the identity in DIR. Entry point of the ``lmctl`` console script.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from limen.api.durations import parse_duration
from limen.api.loader import load_path, load_text
from limen.api.resources import PUBLIC_KINDS, parse_kind
from limen.cli.admin_api import AdminApi, open_admin
from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors, print_table
from limen.cli.lmctl_gitops import gitops
from limen.config import parse_labels
from limen.errors import BadParameter

T = TypeVar("T")

__all__ = ["main"]


def _run(action: Callable[[AdminApi], Awaitable[T]]) -> T:
    params = click.get_current_context().find_root().params

    async def runner() -> T:
        async with open_admin(params["data_dir"], params["auth"], params["identity"]) as admin:
            return await action(admin)

    return asyncio.run(runner())


TTL_OPTION = click.option("--ttl", default="1h", show_default=True,
                          help="How long the sign-up link works (at most 48h).")


def _seconds(text: str) -> int:
    return int(parse_duration(text).total_seconds())


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="LIMEN_DATA_DIR",
              default=".limen-data", show_default=True,
              help="Data directory of the cluster to administer.")
@click.option("--auth", help="Auth server HOST:PORT (with -i).")
@click.option("-i", "--identity", type=click.Path(path_type=Path),
              help="Identity directory (key.pem, tls.crt, cas.pem, meta.json).")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="limen")
def cli(data_dir: Path, auth: str | None, identity: Path | None, debug: bool) -> None:
    """Administer a Limen cluster."""


@cli.command()
@OUTPUT_OPTION
@handle_errors
def status(output: str) -> None:
    """Cluster name, CA fingerprints and listeners."""
    info = _run(lambda admin: admin.status())
    if output != "text":
        emit_documents([info], output)
        return
    click.echo(f"Cluster:  {info['cluster'] or '(not started yet: run limen start once)'}")
    for ca_type, fingerprint in sorted(info["ca_fingerprints"].items()):
        click.echo(f"CA {ca_type + ':':<6} {fingerprint}")
    for name, address in sorted(info.get("listeners", {}).items()):
        click.echo(f"{name + ':':<10}{address}")


@cli.command()
@click.option("-f", "--filename", "path", required=True,
              help="A YAML file, a directory of them (recursive), or - for standard input.")
@OUTPUT_OPTION
@handle_errors
def apply(path: str, output: str) -> None:
    """Validate every document, then apply all of them or none."""
    documents = load_text(sys.stdin.read(), "<stdin>") if path == "-" else load_path(Path(path))
    results = _run(lambda admin: admin.apply(documents))
    if output != "text":
        emit_documents(results, output)
        return
    for row in results:
        click.echo(f"{row['kind'].lower()}/{row['name']} {row['action']}")


def _target(target: str) -> tuple[str, str | None]:
    kind_text, _, name = target.partition("/")
    return parse_kind(kind_text).value, (name or None)


@cli.command()
@click.argument("target")
@OUTPUT_OPTION
@handle_errors
def get(target: str, output: str) -> None:
    """Show KIND or KIND/NAME (users, roles, trustedclusters, resources, clusters, tokens...)."""
    kind, name = _target(target)

    async def fetch(admin: AdminApi) -> list[dict[str, Any]]:
        return [await admin.get_one(kind, name)] if name else await admin.list_kind(kind)

    found = _run(fetch)
    if output != "text":
        emit_documents(found, output, as_list=name is None)
        return
    rows = []
    for doc in found:
        meta = doc.get("metadata", {})
        origin = meta.get("labels", {}).get("limen.dev/origin", "-")
        rows.append((doc["kind"], meta["name"], origin, str(meta.get("resourceVersion", ""))))
    print_table(["KIND", "NAME", "ORIGIN", "REVISION"], rows)


@cli.command("rm")
@click.argument("target")
@handle_errors
def remove(target: str) -> None:
    """Delete KIND/NAME (objects from Git or Kubernetes are removed at their source)."""
    kind, name = _target(target)
    if not name:
        raise BadParameter("rm needs KIND/NAME, for example role/dev")
    if parse_kind(kind) not in PUBLIC_KINDS:
        raise BadParameter(f"{kind} objects cannot be removed with lmctl rm")
    _run(lambda admin: admin.delete(kind, name))
    click.echo(f"{kind.lower()}/{name} deleted")


@cli.group()
def users() -> None:
    """Local users: add, invite."""


def _print_link(result: dict[str, str], name: str, output: str) -> None:
    if output == "json":
        _echo_json(result)
        return
    click.echo(f"User {name!r} can now sign up (the link works once):\n"
               f"  {result['url']}\n"
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
    role_list = [r.strip() for r in roles.split(",") if r.strip()]
    login_list = [x.strip() for x in logins.split(",") if x.strip()]
    seconds = _seconds(ttl)
    _print_link(_run(lambda admin: admin.add_user(name, role_list, login_list, seconds)),
                name, output)


@users.command("invite")
@click.argument("name")
@TTL_OPTION
@OUTPUT_OPTION
@handle_errors
def users_invite(name: str, ttl: str, output: str) -> None:
    """A fresh one-time sign-up link for an existing user (e.g. one declared in Git)."""
    seconds = _seconds(ttl)
    _print_link(_run(lambda admin: admin.invite(name, seconds)), name, output)


@cli.group()
def tokens() -> None:
    """Join tokens for agents and trusted clusters."""


@tokens.command("add")
@click.option("--type", "token_type", required=True,
              type=click.Choice(["node", "db", "kube", "app", "proxy", "trusted_cluster"]))
@click.option("--ttl", default="30m", show_default=True, help="Lifetime, e.g. 30m, 1h.")
@click.option("--labels", default="", help="Labels for what joins with it: k=v,k2=v2.")
@OUTPUT_OPTION
@handle_errors
def tokens_add(token_type: str, ttl: str, labels: str, output: str) -> None:
    """Create a join token (shown once)."""
    seconds = _seconds(ttl)
    result = _run(lambda admin: admin.add_token(token_type, seconds, parse_labels(labels)))
    if output == "json":
        _echo_json(result)
        return
    click.echo(f"The {token_type} token {result['token']} expires at {result['expires']}.\n"
               f"CA pin: {result['ca_pin']}")
    if token_type in ("node", "proxy"):
        where = (f"--proxy {result.get('proxy', 'PROXY_HOST:3080')}" if token_type == "node"
                 else "--auth-server AUTH_HOST:3025")
        click.echo(f"\nOn the {token_type}'s machine:\n  limen start --roles {token_type} "
                   f"--token {result['token']} --ca-pin {result['ca_pin']} {where}")


@cli.group()
def audit() -> None:
    """The audit log."""


@audit.command("search")
@click.option("--type", "types", multiple=True, help="Event type or glob (session.*); repeatable.")
@click.option("--user", help="Only events of this user.")
@click.option("--since", help="1h, 30m, 2d or an ISO date.")
@click.option("--limit", type=int, help="At most this many events.")
@OUTPUT_OPTION
@handle_errors
def audit_search(types: tuple[str, ...], user: str | None, since: str | None,
                 limit: int | None, output: str) -> None:
    """Search the audit log."""
    found = _run(lambda admin: admin.events(list(types), user, since, limit))
    if output == "json":
        _echo_json(found)
        return
    if output == "yaml":
        emit_documents(found, output)
        return
    print_table(["TIME", "EVENT", "CODE", "USER", "SUCCESS"],
                [(e.get("time", ""), e.get("event", ""), e.get("code", ""),
                  str(e.get("user") or "-"), str(e.get("success", ""))) for e in found])


@cli.group()
def auth() -> None:
    """The cluster's certificate authorities."""


@auth.command("export")
@click.option("--type", "ca_type", required=True, type=click.Choice(["user", "host", "tls", "db"]),
              help="user: for sshd's TrustedUserCAKeys; host: @cert-authority lines for "
                   "known_hosts; tls/db: PEM certificates.")
@OUTPUT_OPTION
@handle_errors
def auth_export(ca_type: str, output: str) -> None:
    """Print a CA's public keys in the format its consumers read."""
    ca = _run(lambda admin: admin.export_ca(ca_type))
    if output != "text":
        emit_documents([ca], output)
    elif ca_type == "user":
        click.echo("".join(f"{key}\n" for key in ca["ssh_public_keys"]), nl=False)
    elif ca_type == "host":
        click.echo("".join(f"@cert-authority * {key}\n" for key in ca["ssh_public_keys"]),
                   nl=False)
    else:
        click.echo(ca["pem"], nl=False)


@cli.group()
def access() -> None:
    """Ask the RBAC engine."""


@access.command("check")
@click.argument("user")
@click.argument("target")
@click.option("--login", help="The Unix login (SSH servers) or database user to check.")
@OUTPUT_OPTION
@handle_errors
def access_check(user: str, target: str, login: str | None, output: str) -> None:
    """Would USER be allowed to reach KIND/NAME? Prints the deciding role and rule."""
    kind, name = _target(target)
    if not name:
        raise BadParameter("access check needs KIND/NAME, for example resource/web1")
    result = _run(lambda admin: admin.access_check(user, kind, name, login))
    if output != "text":
        emit_documents([result], output)
    else:
        click.echo(result["text"])
    if not result["allowed"]:
        sys.exit(1)


cli.add_command(gitops)


def main() -> None:
    cli(prog_name="lmctl")
