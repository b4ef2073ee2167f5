"""``lmctl``: the administrator's command line (like Teleport's ``tctl``).

``--data-dir DIR`` uses the admin identity the cluster running from DIR keeps there (or, when
none runs, DIR's store directly); ``--auth HOST:PORT -i DIR`` talks to that auth server with
the identity in DIR. A DIR that holds no cluster is refused without creating anything, except
by ``apply``, which bootstraps a fresh directory's store offline. Entry point of the ``lmctl``
console script; ``users``, ``nodes``, ``tokens``, ``gitops`` and ``auth sign`` live in
``lmctl_*`` modules.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from limen.api.resources import PUBLIC_KINDS, parse_kind
from limen.cli.admin_api import AdminApi
from limen.cli.common import OUTPUT_OPTION, emit_documents, emit_listing, handle_errors, print_table
from limen.cli.lazy_group import LazyGroup
from limen.cli.lmctl_format import AUDIT_HEADERS, audit_rows
from limen.cli.lmctl_locks import LOCK_HEADERS, lock_rows
from limen.cli.lmctl_rotate import rotation_lines
from limen.cli.lmctl_run import run_admin
from limen.errors import BadParameter

__all__ = ["main"]

COMMANDS = {
    "users": "limen.cli.lmctl_users:users",
    "nodes": "limen.cli.lmctl_nodes:nodes",
    "tokens": "limen.cli.lmctl_tokens:tokens",
    "gitops": "limen.cli.lmctl_gitops:gitops",
    "backend": "limen.cli.lmctl_backend:backend",
    "top": "limen.cli.lmctl_top:top",
    "lock": "limen.cli.lmctl_locks:lock",
    "inventory": "limen.cli.lmctl_inventory:inventory",
}
"""The ``lmctl`` subcommands of their own modules, imported only when they run
(``limen.cli.lazy_group``): GitPython, psycopg or the metrics parser cost every start."""


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
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
    info = run_admin(lambda admin: admin.status())
    if output != "text":
        emit_documents([info], output)
        return
    click.echo(f"Cluster:  {info['cluster'] or '(not started yet: run limen start once)'}")
    for ca_type, fingerprint in sorted(info["ca_fingerprints"].items()):
        click.echo(f"CA {ca_type + ':':<6} {fingerprint}")
    for line in rotation_lines(info.get("ca_rotation") or {},
                               info.get("ca_rotation_requests") or {}):
        click.echo(line)
    for name, address in sorted(info.get("listeners", {}).items()):
        click.echo(f"{name + ':':<11}{address}")


@cli.command()
@click.option("-f", "--filename", "path", required=True,
              help="A YAML file, a directory of them (recursive), or - for standard input.")
@OUTPUT_OPTION
@handle_errors
def apply(path: str, output: str) -> None:
    """Validate every document, then apply all of them or none."""
    from limen.api.loader import MAX_FILE_BYTES, load_path, load_text  # PyYAML: here

    documents = (load_text(sys.stdin.read(MAX_FILE_BYTES + 1), "<stdin>") if path == "-" else
                 load_path(Path(path), on_skipped_link=lambda message: click.echo(
                     f"warning: {message}", err=True)))
    results = run_admin(lambda admin: admin.apply(documents), bootstrap=True)
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
    """Show KIND or KIND/NAME (users, roles, trustedclusters, resources, clusters, locks...)."""
    kind, name = _target(target)

    async def fetch(admin: AdminApi) -> list[dict[str, Any]]:
        return [await admin.get_one(kind, name)] if name else await admin.list_kind(kind)

    found = run_admin(fetch)
    if output != "text":
        emit_documents(found, output, as_list=name is None)
        return
    if kind == "Lock":
        print_table(LOCK_HEADERS, lock_rows(found))
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
    run_admin(lambda admin: admin.delete(kind, name))
    click.echo(f"{kind.lower()}/{name} deleted")


@cli.group(cls=LazyGroup,
           lazy_commands={"verify": "limen.cli.lmctl_audit_verify:verify"})
def audit() -> None:
    """The audit log."""


@audit.command("search")
@click.option("--type", "types", multiple=True, help="Event type or glob (session.*); repeatable.")
@click.option("--user", help="Only events of this user.")
@click.option("--since", help="1h, 30m, 2d or an ISO date.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N events.")
@OUTPUT_OPTION
@handle_errors
def audit_search(types: tuple[str, ...], user: str | None, since: str | None,
                 limit: int | None, output: str) -> None:
    """Search the audit log, newest first (SESSION is what `lmsh play` takes)."""
    found = run_admin(lambda admin: admin.events(list(types), user, since, limit))
    emit_listing(found, output, AUDIT_HEADERS, audit_rows)


@cli.group(cls=LazyGroup, lazy_commands={"sign": "limen.cli.lmctl_auth_db:sign",
                                          "rotate": "limen.cli.lmctl_rotate:rotate"})
def auth() -> None:
    """The cluster's certificate authorities."""


@auth.command("export")
@click.option("--type", "ca_type", required=True,
              type=click.Choice(["user", "host", "tls", "db", "db-client"]),
              help="user: for sshd's TrustedUserCAKeys; host: @cert-authority lines for "
                   "known_hosts; tls/db: PEM certificates (db-client, an alias of db: the "
                   "CA a database trusts for Limen's client certificates).")
@OUTPUT_OPTION
@handle_errors
def auth_export(ca_type: str, output: str) -> None:
    """Print a CA's public keys in the format its consumers read."""
    ca_type = "db" if ca_type == "db-client" else ca_type
    ca = run_admin(lambda admin: admin.export_ca(ca_type))
    if output != "text":
        emit_documents([ca], output)
    elif ca_type == "user":
        click.echo("".join(f"{key}\n" for key in ca["ssh_public_keys"]), nl=False)
    elif ca_type == "host":
        click.echo("".join(f"@cert-authority * {key}\n" for key in ca["ssh_public_keys"]),
                   nl=False)
    else:
        click.echo(ca["pem"], nl=False)
        count = str(ca["pem"]).count("-----BEGIN CERTIFICATE-----")
        if ca_type == "db" and count > 1:  # stderr: stdout is the file the database reads
            click.echo(f"{count} DB CA certificates (a rotation of the db CA is under way): "
                       "the databases' ssl_ca_file (PostgreSQL) / ssl-ca (MariaDB) must hold "
                       "all of them before the rotation moves on.", err=True)


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
    """Would USER be allowed to reach KIND/NAME? Prints the deciding role and rule.

    node/NAME is a node online, by hostname or host id (see lmctl nodes ls)."""
    kind_text, _, name = target.partition("/")
    if not name:
        raise BadParameter("access check needs KIND/NAME, for example node/web1 or "
                           "resource/build-box")
    from limen.auth.node_admin import is_node_kind  # presence, jsonschema: only here

    kind = "node" if is_node_kind(kind_text) else parse_kind(kind_text).value
    result = run_admin(lambda admin: admin.access_check(user, kind, name, login))
    if output != "text":
        emit_documents([result], output)
    else:
        click.echo(result["text"])
    if not result["allowed"]:
        sys.exit(1)


def main() -> None:
    cli(prog_name="lmctl")
