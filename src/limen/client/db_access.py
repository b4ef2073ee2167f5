"""``lmsh db``'s conversation with the proxy: the databases you may use, and a database login.

* :func:`list_databases` — ``GET /v1/webapi/user/databases``: the online databases the
  caller's roles allow, with the database users (and names) allowed there.
* :func:`login_database` — picks the database user and name (:func:`choose_db_user`,
  :func:`choose_db_name`), finds the proxy's listener for the protocol in its ping
  (:func:`listener_address`), asks ``POST /v1/webapi/user/db/certs`` for a certificate of the
  login key scoped to that database, and writes the files of
  :mod:`limen.client.db_profiles`.

Called by ``limen.cli.lmsh_db``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from limen.client.db_profiles import (
    MYSQL,
    POSTGRES,
    DbFiles,
    DbTarget,
    write_db_config,
    write_db_credentials,
)
from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi
from limen.errors import BadParameter, ConnectionProblem, NotFound
from limen.net.address import parse_address

__all__ = [
    "DbLogin",
    "choose_db_name",
    "choose_db_user",
    "find_database",
    "list_databases",
    "listener_address",
    "login_database",
]

_WILDCARDS = ("", "0.0.0.0", "::", "*")  # noqa: S104 (compared, never bound)


@dataclass(frozen=True)
class DbLogin:
    """What ``lmsh db login`` wrote."""

    target: DbTarget
    files: DbFiles
    config: str
    """The configuration file the section went to."""
    expires: str
    """ISO expiry of the database certificate."""


async def list_databases(api: WebApi, cluster: str = "") -> list[dict[str, Any]]:
    """``cluster``: a trusted leaf's databases (the leaf answers through the proxy)."""
    answer = await api.as_user("databases", {"cluster": cluster} if cluster else None)
    return list(answer["items"])


def find_database(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise NotFound(f"no database {name!r} you may use is online (see lmsh db ls)")


def choose_db_user(item: Mapping[str, Any], requested: str | None) -> str:
    """``requested``, else the only database user the caller's roles allow there."""
    if requested:
        return requested
    users = [str(u) for u in item.get("db_users") or ()]
    if len(users) == 1 and users[0] != "*":
        return users[0]
    name = item.get("name")
    if not users:
        raise BadParameter(f"your roles allow no database user on {name}")
    which = "any database user" if "*" in users else \
        f"several database users ({', '.join(users)})"
    raise BadParameter(f"you may log in to {name} as {which}: choose one with --db-user")


def choose_db_name(item: Mapping[str, Any], db_user: str, requested: str | None) -> str:
    """``requested``, else the database the Resource names, else (PostgreSQL) the database
    user's name, as libpq defaults; empty for MySQL (no default database)."""
    if requested:
        return requested
    if item.get("database"):
        return str(item["database"])
    return db_user if item.get("protocol") == POSTGRES else ""


def listener_address(ping: Mapping[str, Any], protocol: str, proxy: str) -> tuple[str, int]:
    """The proxy's database listener for ``protocol`` from its ping (``listeners``, or a
    field of the ping itself as ``ssh_proxy`` is); a wildcard host is replaced by the host of
    the proxy's web address (the one the profile uses)."""
    listeners = ping.get("listeners")
    address = listeners.get(protocol) if isinstance(listeners, Mapping) else None
    address = address or ping.get(protocol)
    if not isinstance(address, str) or not address:
        raise ConnectionProblem(f"the proxy {proxy} announces no {protocol} listener: "
                                "database access is not served there")
    host, port = parse_address(address)
    if port == 0:
        raise ConnectionProblem(f"the proxy {proxy} announces {protocol} at {address}, "
                                "without a port")
    return (parse_address(proxy)[0] if host in _WILDCARDS else host), port


async def login_database(store: ProfileStore, profile: Profile, name: str, *,
                         db_user: str | None = None, db_name: str | None = None,
                         env: Mapping[str, str] | None = None, cluster: str = "") -> DbLogin:
    """Log in to database ``name``: certificate, key and configuration section on disk.
    ``cluster``: a database of that trusted leaf cluster (``lmsh db login --cluster``),
    reached through this profile's proxy."""
    leaf = cluster if cluster and cluster != profile.cluster else ""
    api = WebApi.for_profile(store, profile)
    try:
        item = find_database(await list_databases(api, leaf), name)
        protocol = str(item.get("protocol", ""))
        if protocol not in (POSTGRES, MYSQL):
            raise BadParameter(f"{name} speaks {protocol or 'no known protocol'}; lmsh db "
                               "knows postgres and mysql")
        user = choose_db_user(item, db_user)
        database = choose_db_name(item, user, db_name)
        host, port = listener_address(await api.ping(), protocol, profile.proxy)
        body = {"service": name, "db_user": user} | ({"db_name": database} if database else {}) \
            | ({"cluster": leaf} if leaf else {})
        answer = await api.as_user_post("db/certs", body)
    finally:
        await api.close()
    files = write_db_credentials(store, profile, name, str(answer["cert"]).encode(), leaf)
    target = DbTarget(cluster=leaf or profile.cluster, service=name, protocol=protocol, host=host,
                      port=port, db_user=user, db_name=database)
    config = write_db_config(target, files, env)
    return DbLogin(target=target, files=files, config=str(config),
                   expires=str(answer.get("expires", "")))
