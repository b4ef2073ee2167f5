"""How the provisioners write names into SQL: PostgreSQL identifiers and literals, MariaDB
strings and certificate subjects; names the databases would mangle are refused."""

from __future__ import annotations

import pytest

from limen.agents.db.provisioning_errors import ProvisioningRefused
from limen.agents.db.provisioning_mysql import (
    certificate_subject,
    check_name,
    quote_string,
    user_role,
)
from limen.agents.db.provisioning_postgres import quote_ident, quote_literal


def test_postgres_names_are_quoted_identifiers_and_literals() -> None:
    assert quote_ident('evil"; DROP TABLE t; --') == '"evil""; DROP TABLE t; --"'
    assert quote_literal("o'brien'; --") == "'o''brien''; --'"


@pytest.mark.parametrize("name", ["", "nul\0byte", "x" * 64, "é" * 32])
def test_postgres_refuses_names_it_would_truncate_or_cannot_hold(name: str) -> None:
    with pytest.raises(ProvisioningRefused):
        quote_ident(name)


def test_mariadb_strings_escape_quotes_and_backslashes() -> None:
    assert quote_string("evil'; DROP TABLE t; --") == "'evil''; DROP TABLE t; --'"
    assert quote_string("/CN=a\\/b") == "'/CN=a\\\\/b'"


@pytest.mark.parametrize("name", ["", "back\\slash", "line\nbreak", "del\x7f"])
def test_mariadb_refuses_names_whose_subject_could_match_another_user(name: str) -> None:
    with pytest.raises(ProvisioningRefused):
        check_name(name)


def test_mariadb_subject_and_per_user_role() -> None:
    assert certificate_subject("alice") == "/CN=alice"
    assert certificate_subject("a/b+c") == "/CN=a\\/b\\+c"
    assert certificate_subject("é") == "/CN=\\xC3\\xA9"
    assert user_role("alice") == user_role("alice") != user_role("bob")
    assert user_role("alice").startswith("limen-auto-")
    assert len(user_role("alice")) == 31
