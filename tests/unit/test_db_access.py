"""``lmsh db login``'s choices (``limen.client.db_access``): the database user (the only one
allowed, else --db-user is asked for), the database name (the Resource's, else the user's for
PostgreSQL), the proxy's listener from its ping (a wildcard host means the proxy's own), and
the stock client's command line (``limen.cli.lmsh_db.client_command``).
"""

from __future__ import annotations

from typing import Any

import pytest

from limen.cli.lmsh_db import client_command
from limen.client.db_access import (
    choose_db_name,
    choose_db_user,
    find_database,
    listener_address,
)
from limen.errors import BadParameter, ConnectionProblem, NotFound

ORDERS: dict[str, Any] = {"name": "orders", "protocol": "postgres", "database": "",
                          "db_users": ["app"]}


def test_the_only_allowed_user_is_the_default() -> None:
    assert choose_db_user(ORDERS, None) == "app"
    assert choose_db_user(ORDERS, "report") == "report"  # the proxy decides; auth checks


def test_several_or_any_users_ask_for_db_user() -> None:
    with pytest.raises(BadParameter, match=r"several database users \(app, report\).*--db-user"):
        choose_db_user({**ORDERS, "db_users": ["app", "report"]}, None)
    with pytest.raises(BadParameter, match=r"any database user.*--db-user"):
        choose_db_user({**ORDERS, "db_users": ["*"]}, None)
    with pytest.raises(BadParameter, match="allow no database user"):
        choose_db_user({**ORDERS, "db_users": []}, None)


def test_the_database_name_defaults() -> None:
    assert choose_db_name(ORDERS, "app", "other") == "other"
    assert choose_db_name({**ORDERS, "database": "orders"}, "app", None) == "orders"
    assert choose_db_name(ORDERS, "app", None) == "app"  # libpq's default
    assert choose_db_name({**ORDERS, "protocol": "mysql"}, "app", None) == ""


def test_a_database_not_listed_is_not_found() -> None:
    assert find_database([ORDERS], "orders") is ORDERS
    with pytest.raises(NotFound, match="lmsh db ls"):
        find_database([ORDERS], "shop")


def test_the_listener_comes_from_the_ping() -> None:
    nested = {"listeners": {"postgres": "db.example:5433", "mysql": "0.0.0.0:3036"}}
    assert listener_address(nested, "postgres", "proxy.example:3080") == ("db.example", 5433)
    assert listener_address(nested, "mysql", "proxy.example:3080") == ("proxy.example", 3036)
    flat = {"postgres": "[::]:5433", "ssh_proxy": "x:3023"}
    assert listener_address(flat, "postgres", "[2001:db8::1]:3080") == ("2001:db8::1", 5433)
    with pytest.raises(ConnectionProblem, match="announces no mysql listener"):
        listener_address(flat, "mysql", "proxy.example:3080")
    with pytest.raises(ConnectionProblem, match="without a port"):
        listener_address({"postgres": "db.example:0"}, "postgres", "proxy.example:3080")


def test_the_client_command_lines() -> None:
    assert client_command("postgres", "main", "orders", ("-c", "select 1")) == [
        "psql", "service=main-orders", "-c", "select 1"]
    assert client_command("mysql", "main", "shop") == [
        "mysql", "--defaults-group-suffix=-main-shop"]
