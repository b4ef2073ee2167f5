"""``lmctl auth sign --format db``: a database server's key and certificate from the cluster's
DB CA, the CA file the database trusts for Limen's client certificates, and the PostgreSQL and
MariaDB configuration that uses them (``limen.cli.db_server_config``).

Writes ``PREFIX.key`` (a fresh ECDSA P-256 key, 0600), ``PREFIX.crt`` (its certificate for
every ``--host`` name and address) and ``PREFIX.cas`` (the DB CA), then prints the
configuration with their absolute paths. Online through the auth API (``POST
/v1/db/server-certs``); when no cluster runs from ``--data-dir``, signed with the DB CA of
the data directory itself, audited the same way (``cert.create``). Registered on the ``auth``
group by ``limen.cli.lmctl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from limen.ca.keys import KeyType, generate_private_key, private_key_to_pem, public_key_to_pem
from limen.cli.admin_api import AdminApi, RemoteAdmin
from limen.cli.common import handle_errors
from limen.cli.db_server_config import mariadb_config, postgres_config
from limen.cli.lmctl_run import csv_list, run_admin, seconds
from limen.errors import BadParameter
from limen.files import replace_atomically

if TYPE_CHECKING:
    from limen.cli.admin_local import LocalAdmin

__all__ = ["ServerFiles", "sign", "sign_db_server", "write_server_files"]

@dataclass(frozen=True)
class ServerFiles:
    key: Path
    cert: Path
    cas: Path


async def sign_db_server(admin: AdminApi, hosts: list[str], public_key_pem: str,
                         ttl_seconds: int) -> dict[str, Any]:
    """``{cert, ca}``: a server certificate of the DB CA for ``hosts``, and the DB CA."""
    if isinstance(admin, RemoteAdmin):
        answer: dict[str, Any] = await admin.client.call(
            "POST", "/v1/db/server-certs",
            {"hosts": hosts, "public_key": public_key_pem, "ttl_seconds": ttl_seconds})
        return answer
    from limen.cli.admin_local import LocalAdmin  # the whole auth server: only offline

    if not isinstance(admin, LocalAdmin):
        raise BadParameter("this admin connection cannot sign database certificates")
    return await _sign_offline(admin, hosts, public_key_pem, ttl_seconds)


async def _sign_offline(admin: LocalAdmin, hosts: list[str], public_key_pem: str,
                        ttl_seconds: int) -> dict[str, Any]:
    from limen.auth.db_access import issue_server_cert
    from limen.cli.admin_local import ACTOR

    cert, ca = await issue_server_cert(admin.server, ACTOR, hosts, public_key_pem,
                                       timedelta(seconds=ttl_seconds))
    return {"cert": cert.decode(), "ca": ca.decode()}


def write_server_files(prefix: Path, key_pem: str, cert_pem: str, ca_pem: str) -> ServerFiles:
    """``PREFIX.key`` (0600), ``PREFIX.crt`` and ``PREFIX.cas`` (0644), each replaced
    atomically; paths absolute. The directory must exist (its mode is left alone)."""
    base = prefix.expanduser().absolute()
    if not base.parent.is_dir():
        raise BadParameter(f"{base.parent} is not a directory: --out takes a path prefix in "
                           "an existing directory, e.g. /etc/limen-db/server")
    files = ServerFiles(key=base.with_name(base.name + ".key"),
                        cert=base.with_name(base.name + ".crt"),
                        cas=base.with_name(base.name + ".cas"))
    replace_atomically(files.key, key_pem, 0o600)
    replace_atomically(files.cert, cert_pem, 0o644)
    replace_atomically(files.cas, ca_pem, 0o644)
    return files


@click.command("sign")
@click.option("--format", "cert_format", required=True, type=click.Choice(["db"]),
              help="db: a database server's key and certificate from the DB CA.")
@click.option("--host", "hosts", required=True, metavar="NAME[,NAME2,IP]",
              help="The names and addresses clients reach the database at.")
@click.option("--out", "prefix", required=True, type=click.Path(path_type=Path),
              help="Path prefix: writes PREFIX.key, PREFIX.crt and PREFIX.cas.")
@click.option("--ttl", default="2160h", show_default=True, help="Certificate lifetime.")
@handle_errors
def sign(cert_format: str, hosts: str, prefix: Path, ttl: str) -> None:
    """Sign a certificate for a database server and print its TLS configuration."""
    host_list = csv_list(hosts)
    ttl_seconds = seconds(ttl)
    key = generate_private_key(KeyType.ECDSA_P256)
    answer = run_admin(lambda admin: sign_db_server(
        admin, host_list, public_key_to_pem(key.public_key()), ttl_seconds))
    files = write_server_files(prefix, private_key_to_pem(key), str(answer["cert"]),
                               str(answer["ca"]))
    click.echo(f"# Wrote {files.key} (private key, 0600: give it to the database's user),\n"
               f"# {files.cert} (server certificate for {', '.join(host_list)}) and\n"
               f"# {files.cas} (the CA whose client certificates the database accepts).\n")
    click.echo("# ---- PostgreSQL")
    click.echo(postgres_config(str(files.cert), str(files.key), str(files.cas)))
    click.echo("# ---- MariaDB")
    click.echo(mariadb_config(str(files.cert), str(files.key), str(files.cas)), nl=False)
