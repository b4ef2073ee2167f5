"""The database server configuration text ``lmctl auth sign --format db`` prints
(``limen.cli.db_server_config``): the settings each section holds, and the quoting of paths and
user names. That real servers accept the text is proven by tests/integration/test_dbservers.py.
"""

from __future__ import annotations

import pytest

from limen.cli.db_server_config import (
    MARIADB_CNF,
    MARIADB_SQL,
    PG_HBA_CONF,
    POSTGRESQL_CONF,
    mariadb_config,
    mariadb_user_sql,
    postgres_config,
    section_heading,
)
from limen.errors import BadParameter


def _sections(text: str) -> dict[str, list[str]]:
    """The non-comment, non-blank lines of each section, by the name in its heading."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("# ==> ") and line.endswith(" <=="):
            current = sections.setdefault(line[len("# ==> "):-len(" <==")], [])
        elif line and not line.startswith("#"):
            current.append(line)
    return sections


def _comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def test_section_heading_names_the_file() -> None:
    assert section_heading("pg_hba.conf") == "# ==> pg_hba.conf <=="


def test_postgres_config_turns_on_tls_with_the_three_files() -> None:
    text = postgres_config("/etc/pg/server.crt", "/etc/pg/server.key", "/etc/pg/limen-ca.crt")
    assert _sections(text)[POSTGRESQL_CONF] == [
        "ssl = on",
        "ssl_cert_file = '/etc/pg/server.crt'",
        "ssl_key_file = '/etc/pg/server.key'",
        "ssl_ca_file = '/etc/pg/limen-ca.crt'",
    ]


def test_postgres_config_hba_requires_a_certificate_and_rejects_plaintext() -> None:
    text = postgres_config("/c", "/k", "/ca")
    assert _sections(text)[PG_HBA_CONF] == ["hostssl all all all cert", "host all all all reject"]


def test_postgres_config_puts_each_block_under_a_heading_naming_its_file() -> None:
    text = postgres_config("/c", "/k", "/ca")
    lines = text.splitlines()
    assert lines[0] == section_heading(POSTGRESQL_CONF)
    assert lines.index(section_heading(PG_HBA_CONF)) < lines.index("hostssl all all all cert")
    assert list(_sections(text)) == [POSTGRESQL_CONF, PG_HBA_CONF]
    assert text.endswith("\n")


def test_postgres_config_quotes_paths_with_quotes_and_backslashes() -> None:
    text = postgres_config("/srv/o'brien/server.crt", "C:\\pg\\server.key", "/a b/#ca.crt")
    assert _sections(text)[POSTGRESQL_CONF][1:] == [
        "ssl_cert_file = '/srv/o''brien/server.crt'",
        "ssl_key_file = 'C:\\\\pg\\\\server.key'",
        "ssl_ca_file = '/a b/#ca.crt'",
    ]


@pytest.mark.parametrize(("cert", "key", "ca"), [
    ("", "/k", "/ca"), ("/c", "/k\n/x", "/ca"), ("/c", "/k", "/ca\x00"), ("/c\r", "/k", "/ca"),
])
def test_paths_that_cannot_be_written_safely_are_refused(cert: str, key: str, ca: str) -> None:
    for render in (postgres_config, mariadb_config):
        with pytest.raises(BadParameter):
            render(cert, key, ca)


def test_mariadb_config_section_requires_tls_with_the_three_files() -> None:
    text = mariadb_config("/etc/mysql/server.crt", "/etc/mysql/server.key",
                          "/etc/mysql/limen-ca.crt")
    assert _sections(text)[MARIADB_CNF] == [
        "[mariadbd]",
        'ssl_cert = "/etc/mysql/server.crt"',
        'ssl_key = "/etc/mysql/server.key"',
        'ssl_ca = "/etc/mysql/limen-ca.crt"',
        "require_secure_transport = ON",
    ]


def test_mariadb_config_quotes_paths_for_the_option_file() -> None:
    text = mariadb_config('/a "b"/c.crt', "/x\\y.key", "/certs #1/ca.crt")
    assert _sections(text)[MARIADB_CNF][1:4] == [
        'ssl_cert = "/a \\"b\\"/c.crt"',
        'ssl_key = "/x\\\\y.key"',
        'ssl_ca = "/certs #1/ca.crt"',
    ]


def test_mariadb_config_shows_the_create_user_for_alice_as_a_commented_example() -> None:
    text = mariadb_config("/c", "/k", "/ca")
    assert _sections(text)[MARIADB_SQL] == [
        "CREATE USER 'alice'@'%' REQUIRE SUBJECT '/CN=alice';",
    ]
    sql_part = text[text.index(section_heading(MARIADB_SQL)):]
    assert any("example" in line.lower() for line in _comments(sql_part))
    assert any("GRANT" in line for line in _comments(sql_part))


def test_mariadb_user_sql_requires_the_subject_cn_of_the_user() -> None:
    assert mariadb_user_sql("alice") == "CREATE USER 'alice'@'%' REQUIRE SUBJECT '/CN=alice';"


def test_mariadb_user_sql_doubles_a_quote_in_the_name() -> None:
    assert (mariadb_user_sql("o'brien")
            == "CREATE USER 'o''brien'@'%' REQUIRE SUBJECT '/CN=o''brien';")


def test_mariadb_user_sql_cannot_be_broken_out_of() -> None:
    statement = mariadb_user_sql("x'; DROP DATABASE app; --")
    assert statement == ("CREATE USER 'x''; DROP DATABASE app; --'@'%' "
                         "REQUIRE SUBJECT '/CN=x''; DROP DATABASE app; --';")


def test_mariadb_user_sql_writes_the_subject_as_openssl_does() -> None:
    # OpenSSL's one-line subject: bytes outside printable ASCII as \xHH, "/" and "+" escaped;
    # each backslash is doubled in the SQL string
    assert mariadb_user_sql("zoë") == (
        "CREATE USER 'zoë'@'%' REQUIRE SUBJECT '/CN=zo\\\\xC3\\\\xAB';")
    assert mariadb_user_sql("ops/db+1") == (
        "CREATE USER 'ops/db+1'@'%' REQUIRE SUBJECT '/CN=ops\\\\/db\\\\+1';")
    assert mariadb_user_sql('a "b", c=d') == (
        "CREATE USER 'a \"b\", c=d'@'%' REQUIRE SUBJECT '/CN=a \"b\", c=d';")


@pytest.mark.parametrize("name", ["", "a\\b", "a\nb", "a\tb", "a\x7fb", "a\udc80b"])
def test_mariadb_user_sql_refuses_names_it_cannot_match_safely(name: str) -> None:
    with pytest.raises(BadParameter):
        mariadb_user_sql(name)
