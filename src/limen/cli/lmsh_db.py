"""``lmsh db``: databases through Limen with the stock clients (like ``tsh db``), and
``lmsh proxy db`` for tools that cannot present a client certificate.

::

    lmsh db ls                        the online databases your roles allow, with their users
    ... --cluster LEAF                ls, login, connect, env and proxy db: the databases of a
                                      trusted leaf cluster, through this proxy (its roles
                                      decide, with your mapped roles)
    lmsh db login NAME [--db-user U] [--db-name D]
                                      certificate + key on disk, a section in
                                      ~/.pg_service.conf or ~/.my.cnf (limen.client.db_profiles)
    lmsh db connect NAME [-- ARGS]    logs in when needed, then runs psql or mysql
    lmsh db env NAME                  PGSERVICE / MYSQL_GROUP_SUFFIX exports
    lmsh db logout [NAME]             removes the files and sections (of every database)
    lmsh proxy db NAME --port P       plaintext on 127.0.0.1:P for your own tools only, to
                                      the proxy's web port (ALPN), or its db listener when
                                      the proxy is older (limen.client.db_local_proxy)

``db`` is registered on the ``lmsh`` group and ``proxy_db`` on its ``proxy`` group by
``limen.cli.lmsh``.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
from datetime import UTC, datetime
from typing import Any

import click

from limen.ca.identity import RouteToDatabase
from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors, print_table
from limen.cli.lmctl_format import labels_text
from limen.client.db_access import list_databases, listener_address, login_database
from limen.client.db_profiles import (
    POSTGRES,
    configured_protocol,
    current_route,
    db_files,
    forget_all_databases,
    forget_database,
    mysql_group_suffix,
    pg_service_path,
    service_name,
)
from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi
from limen.dbproto.alpn import ALPN_BY_PROTOCOL
from limen.errors import BadParameter, ConnectionProblem, NotFound
from limen.net.address import parse_address

__all__ = ["client_command", "db", "proxy_db"]

_CLIENTS = {
    POSTGRES: ("psql", "the PostgreSQL client (e.g. apt install postgresql-client)"),
    "mysql": ("mysql", "the MariaDB or MySQL client (e.g. apt install mariadb-client)"),
}
_DB_USER = click.option("--db-user", help="Database user (default: the only one you may use).")
_CLUSTER = click.option("--cluster", default="", help="A trusted leaf cluster's database "
                        "(default: this proxy's own cluster).")
_DB_NAME = click.option("--db-name", help="Database to open (default: the Resource's, or for "
                                          "PostgreSQL the database user's name).")


def _logged_in() -> tuple[ProfileStore, Profile]:
    store = ProfileStore()
    return store, store.current_valid()


def _leaf(profile: Profile, cluster: str) -> str:
    """The leaf cluster named by ``--cluster`` (empty: the profile's own)."""
    return cluster if cluster != profile.cluster else ""


async def _databases(store: ProfileStore, profile: Profile, cluster: str = ""
                     ) -> list[dict[str, Any]]:
    api = WebApi.for_profile(store, profile)
    try:
        return await list_databases(api, _leaf(profile, cluster))
    finally:
        await api.close()


def _ensure_login(store: ProfileStore, profile: Profile, name: str, db_user: str | None,
                  db_name: str | None, cluster: str = "") -> tuple[str, RouteToDatabase]:
    """The protocol and route of a usable login to ``name`` (matching the options given),
    logging in first when there is none."""
    leaf = _leaf(profile, cluster)
    route = current_route(store, profile, name, cluster=leaf)
    protocol = configured_protocol(leaf or profile.cluster, name)
    if route is not None and protocol is not None and db_user in (None, route.user) \
            and db_name in (None, route.name):
        return protocol, route
    login = asyncio.run(login_database(store, profile, name, db_user=db_user, db_name=db_name,
                                       cluster=leaf))
    click.echo(f"Logged in to {name} as {login.target.db_user}.", err=True)
    target = login.target
    return target.protocol, RouteToDatabase(name, target.db_user, target.db_name)


def client_command(protocol: str, cluster: str, name: str, extra: tuple[str, ...] = ()
                   ) -> list[str]:
    """The stock client's command line for a database ``lmsh db login`` configured."""
    if protocol == POSTGRES:
        return ["psql", f"service={service_name(cluster, name)}", *extra]
    return ["mysql", f"--defaults-group-suffix={mysql_group_suffix(cluster, name)}", *extra]


@click.group()
def db() -> None:
    """Databases: list, log in, connect with psql or mysql."""


@db.command("ls")
@OUTPUT_OPTION
@_CLUSTER
@handle_errors
def ls(output: str, cluster: str) -> None:
    """The online databases your roles allow, and the database users you may log in as."""
    store, profile = _logged_in()
    items = asyncio.run(_databases(store, profile, cluster))
    if output != "text":
        emit_documents(items, output, as_list=True)
        return
    if not items:
        click.echo("no database you may use is online", err=True)
        return
    print_table(["NAME", "PROTOCOL", "DESCRIPTION", "LABELS", "ALLOWED USERS"], [
        (i["name"], i.get("protocol") or "-", i.get("description") or "-",
         labels_text(i.get("labels") or {}),
         ",".join(i.get("db_users") or ()) or "-")
        for i in items])


@db.command("login")
@click.argument("name")
@_DB_USER
@_DB_NAME
@_CLUSTER
@handle_errors
def login(name: str, db_user: str | None, db_name: str | None, cluster: str) -> None:
    """Get a certificate for database NAME and configure psql or mysql for it."""
    store, profile = _logged_in()
    leaf = _leaf(profile, cluster)
    done = asyncio.run(login_database(store, profile, name, db_user=db_user, db_name=db_name,
                                      cluster=leaf))
    target = done.target
    flag = f" --cluster {shlex.quote(leaf)}" if leaf else ""
    database = f", database {target.db_name}" if target.db_name else ""
    click.echo(f"Logged in to {name} ({target.protocol}) as {target.db_user}{database}, "
               f"until {done.expires}.\nConfigured in {done.config}. Connect with:\n  "
               f"{shlex.join(client_command(target.protocol, target.cluster, name))}\n"
               f"  or: lmsh db connect{flag} {shlex.quote(name)}")


@db.command("connect", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@_DB_USER
@_DB_NAME
@_CLUSTER
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def connect(name: str, db_user: str | None, db_name: str | None, cluster: str,
            extra: tuple[str, ...]) -> None:
    """Run psql or mysql on database NAME (logging in first when needed); arguments after
    -- go to the client."""
    store, profile = _logged_in()
    protocol, _route = _ensure_login(store, profile, name, db_user, db_name, cluster)
    program, package = _CLIENTS[protocol]
    if shutil.which(program) is None:
        raise NotFound(f"{program} is not on your PATH: install {package}")
    argv = client_command(protocol, _leaf(profile, cluster) or profile.cluster, name, extra)
    os.execvp(program, argv)  # noqa: S606


@db.command("env")
@click.argument("name")
@OUTPUT_OPTION
@_CLUSTER
@handle_errors
def env(name: str, output: str, cluster: str) -> None:
    """Shell exports that point the stock clients at database NAME: eval "$(lmsh db env NAME)"."""
    profile = ProfileStore().current()
    where = _leaf(profile, cluster) or profile.cluster
    protocol = configured_protocol(where, name)
    if protocol is None:
        raise NotFound(f"not logged in to database {name}: run lmsh db login {name}")
    if protocol == POSTGRES:
        values = {"PGSERVICEFILE": str(pg_service_path()),
                  "PGSERVICE": service_name(where, name)}
    else:
        values = {"MYSQL_GROUP_SUFFIX": mysql_group_suffix(where, name)}
    if output != "text":
        emit_documents([values], output)
        return
    for key, value in values.items():
        click.echo(f"export {key}={shlex.quote(value)}")
    if protocol != POSTGRES:
        click.echo(f"# or: {shlex.join(client_command(protocol, where, name))}")


@db.command("logout")
@click.argument("name", required=False)
@handle_errors
def logout(name: str | None) -> None:
    """Remove the certificate, key and client configuration of database NAME (of every
    database without NAME)."""
    store = ProfileStore()
    profile = store.current()
    if name is None:
        names = forget_all_databases(store, profile)
        click.echo(f"Logged out of {', '.join(names)}." if names
                   else "Not logged in to any database.")
        return
    if not forget_database(store, profile, name):
        raise NotFound(f"not logged in to database {name}")
    click.echo(f"Logged out of {name}.")


def _example(protocol: str, host: str, port: int, route: RouteToDatabase) -> str:
    if protocol == POSTGRES:
        return shlex.join(["psql", f"host={host} port={port} user={route.user} "
                                   f"dbname={route.name or route.user} sslmode=disable"])
    return shlex.join(["mysql", "-h", host, "-P", str(port), "-u", route.user,
                       *([route.name] if route.name else []), "--skip-ssl"])


@click.command("db")
@click.argument("name")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Local port on 127.0.0.1 (0 picks a free one).")
@_DB_USER
@_DB_NAME
@_CLUSTER
@handle_errors
def proxy_db(name: str, port: int, db_user: str | None, db_name: str | None,
             cluster: str) -> None:
    """Serve database NAME without TLS on 127.0.0.1:PORT, for tools that cannot present a
    client certificate; only your own processes may connect. Connections go to the proxy's
    web port (or its database listener, when the proxy is older). Stops at Ctrl-C, or when
    the database certificate expires."""
    # the wire protocols' codecs: loaded by this command only
    from limen.client.db_local_proxy import LocalDbProxy, Upstream, upstream_context

    store, profile = _logged_in()
    protocol, route = _ensure_login(store, profile, name, db_user, db_name, cluster)
    files = db_files(store, profile, name, _leaf(profile, cluster))
    trusted = store.trusted_cas(profile.proxy)
    web_host, web_port = parse_address(profile.proxy)
    web = Upstream(web_host, web_port, upstream_context(files, trusted),
                   alpn=ALPN_BY_PROTOCOL[protocol])

    async def serve() -> None:
        api = WebApi.for_profile(store, profile)
        try:
            ping = await api.ping()
        finally:
            await api.close()
        try:  # for a proxy that does not route databases on its web port (an older one)
            fallback: Upstream | None = Upstream(*listener_address(ping, protocol, profile.proxy),
                                                 upstream_context(files, trusted))
        except ConnectionProblem:
            fallback = None
        local = LocalDbProxy(protocol, web, fallback=fallback,
                             report=lambda message: click.echo(f"lmsh: {message}", err=True))
        bound_host, bound_port = await local.start(port)
        click.echo(f"Serving {name} ({protocol}, as {route.user}) on {bound_host}:{bound_port}"
                   f" for your own processes. For example:\n  "
                   f"{_example(protocol, bound_host, bound_port, route)}")
        try:
            await asyncio.sleep(_seconds_left(profile))
        finally:
            await local.close()
        raise BadParameter("the database certificate expired: run lmsh login, then lmsh "
                           "proxy db again")

    asyncio.run(serve())


def _seconds_left(profile: Profile) -> float:
    return max(0.0, (profile.expires_at - datetime.now(UTC)).total_seconds())
