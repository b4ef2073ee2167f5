"""The database server configuration an operator pastes so Limen's db agent can log in.

Limen's db agent logs in to PostgreSQL and MariaDB over TLS with a client certificate from
Limen's database CA whose subject is exactly ``CN=<database user>``, with no password. The
server must present a certificate from that CA, trust only that CA for clients, and refuse
plaintext TCP connections. These pure functions return that configuration as text, given the
paths where the operator puts the files; the text is split into sections, each under a heading
line ``# ==> <file> <==`` (see :func:`section_heading`) naming where it goes.

Printed by ``lmctl auth sign --format db``. The test fixtures (``tests/dbservers.py``) start
real PostgreSQL and MariaDB servers from exactly these sections, so the printed text is what the
test suite proves works.
"""

from __future__ import annotations

from limen.errors import BadParameter

__all__ = [
    "MARIADB_CNF",
    "MARIADB_SQL",
    "PG_HBA_CONF",
    "POSTGRESQL_CONF",
    "mariadb_config",
    "mariadb_user_sql",
    "postgres_config",
    "section_heading",
]

POSTGRESQL_CONF = "postgresql.conf"
PG_HBA_CONF = "pg_hba.conf"
MARIADB_CNF = "my.cnf"
MARIADB_SQL = "SQL"

_EXAMPLE_USER = "alice"


def section_heading(name: str) -> str:
    """The comment line that starts the section for ``name`` (a file name, or ``SQL``)."""
    return f"# ==> {name} <=="


def _refuse_control(what: str, value: str) -> None:
    if not value:
        raise BadParameter(f"the {what} is empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise BadParameter(f"the {what} {value!r} contains a control character")


def _postgres_string(path: str, what: str) -> str:
    """A postgresql.conf string value: single quotes, quotes doubled, backslashes doubled."""
    _refuse_control(what, path)
    return "'" + path.replace("\\", "\\\\").replace("'", "''") + "'"


def _option_file_string(path: str, what: str) -> str:
    """A MariaDB option-file value in double quotes (``\\\\`` and ``\\"`` escaped), so spaces,
    ``#`` and quotes in the path survive."""
    _refuse_control(what, path)
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def postgres_config(cert_file: str, key_file: str, ca_file: str) -> str:
    """The postgresql.conf settings and the pg_hba.conf lines for a PostgreSQL server that
    Limen's db agent logs in to with a certificate (``CN`` = the database user, no password)."""
    return "\n".join([
        section_heading(POSTGRESQL_CONF),
        "# TLS with a server certificate from Limen's database CA; client certificates are",
        "# verified against that CA only. The key file must belong to the server's user (0600).",
        "# Apply (with pg_hba.conf below): SELECT pg_reload_conf();",
        "ssl = on",
        f"ssl_cert_file = {_postgres_string(cert_file, 'server certificate path')}",
        f"ssl_key_file = {_postgres_string(key_file, 'server key path')}",
        f"ssl_ca_file = {_postgres_string(ca_file, 'CA certificate path')}",
        "",
        section_heading(PG_HBA_CONF),
        "# Replace every host/hostssl/hostnossl line with these two (local lines may stay): TLS",
        "# with a certificate whose CN is the user name, and no plaintext TCP connection at all.",
        "hostssl all all all cert",
        "host all all all reject",
        "",
    ])


def mariadb_config(cert_file: str, key_file: str, ca_file: str) -> str:
    """The ``[mariadbd]`` option-file section and an example ``CREATE USER`` for a MariaDB
    server that Limen's db agent logs in to with a certificate (no password)."""
    return "\n".join([
        section_heading(MARIADB_CNF),
        "# Or a file of its own, such as /etc/mysql/mariadb.conf.d/60-limen.cnf: TLS with a",
        "# server certificate from Limen's database CA, client certificates verified against",
        "# that CA only, and every TCP connection must use TLS. Apply with a restart; later,",
        "# FLUSH SSL reloads replaced files.",
        "[mariadbd]",
        f"ssl_cert = {_option_file_string(cert_file, 'server certificate path')}",
        f"ssl_key = {_option_file_string(key_file, 'server key path')}",
        f"ssl_ca = {_option_file_string(ca_file, 'CA certificate path')}",
        "require_secure_transport = ON",
        "",
        section_heading(MARIADB_SQL),
        "# One account per database user Limen logs in as, identified by its certificate",
        f"# subject and no password. For example, for the database user {_EXAMPLE_USER}:",
        mariadb_user_sql(_EXAMPLE_USER),
        f"# then grant what it may do, e.g.: GRANT ALL ON app.* TO '{_EXAMPLE_USER}'@'%';",
        "",
    ])


def _subject_byte(byte: int) -> str:
    if not 0x20 <= byte <= 0x7E:
        return f"\\x{byte:02X}"
    return ("\\" if byte in b"/+" else "") + chr(byte)


def _certificate_subject(user: str) -> str:
    """The subject of Limen's certificate for ``user`` as MariaDB compares it: OpenSSL 3's
    one-line form, ``/CN=`` and the UTF-8 bytes of the name, those outside printable ASCII
    written ``\\xHH`` and ``/`` and ``+`` preceded by a backslash."""
    return "/CN=" + "".join(_subject_byte(byte) for byte in user.encode("utf-8"))


def _sql_string(value: str) -> str:
    """A single-quoted SQL string for MariaDB's default sql_mode: quotes doubled, backslashes
    escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def mariadb_user_sql(user: str) -> str:
    """``CREATE USER '<user>'@'%' REQUIRE SUBJECT '/CN=<user>';`` with the name quoted safely.

    A backslash in the name is refused: OpenSSL's one-line subject escapes with it but leaves
    a backslash itself as is, so such a name could match the certificate of another user. The
    statement is for MariaDB's default sql_mode, where a backslash in a string escapes."""
    _refuse_control("database user name", user)
    try:
        user.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadParameter(f"the database user name {user!r} is not valid Unicode") from err
    if "\\" in user:
        raise BadParameter(f"the database user name {user!r} contains a backslash")
    return (f"CREATE USER {_sql_string(user)}@'%' "
            f"REQUIRE SUBJECT {_sql_string(_certificate_subject(user))};")
