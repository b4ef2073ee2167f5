"""The database server configuration Limen prints (``limen.cli.db_server_config``) does what it
says on real servers: PostgreSQL 15 and MariaDB 10.11, started by ``tests/dbservers.py`` from
exactly that text, let a client with a certificate for ``CN=<user>`` from the trusted CA log in as
that user with no password, and refuse everything else (another CA, plaintext, another CN).

The clients are the stock ones (psql, mariadb) verifying the server's certificate too; the CAs
are throwaway ECDSA P-256 ones made here.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dbservers import PG_BIN, MariaDBServer, PostgresServer, config_sections
from limen.cli.db_server_config import (
    MARIADB_CNF,
    POSTGRESQL_CONF,
    mariadb_config,
    postgres_config,
)

USERS = ("alice", "mallory", "o'brien", "zoë", "ops/db+1")  # quoting and subject escaping
PASSWORD_USER, PASSWORD = "plaintext_probe", "not-a-secret"  # MariaDB: TLS without a cert


@dataclass(frozen=True)
class Issued:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


class TestCA:
    """A throwaway certificate authority (ECDSA P-256)."""

    __test__ = False

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (self._builder(self.name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def _builder(self, subject: x509.Name,
                 public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        now = datetime.now(UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name)
                .public_key(public_key).serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(hours=1)))

    def issue(self, common_name: str, *, server: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (self._builder(subject, key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]), False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


@dataclass(frozen=True)
class ClientFiles:
    """A client's certificate and key on disk (key 0600)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: TestCA
    server: Issued
    ca_file: Path
    clients: dict[str, ClientFiles]  # by user name, plus "intruder": CN=alice from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other_ca = TestCA("Limen database CA"), TestCA("another CA")
    issued = {user: ca.issue(user) for user in USERS}
    issued["intruder"] = other_ca.issue("alice")
    clients = {}
    for index, (name, files) in enumerate(issued.items()):
        cert, key = directory / f"client{index}.crt", directory / f"client{index}.key"
        cert.write_bytes(files.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(files.key_pem)
        clients[name] = ClientFiles(cert, key)
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca.cert_pem)
    return Pki(ca, ca.issue("localhost", server=True), ca_file, clients)


@pytest.fixture(scope="module")
def postgres(request: pytest.FixtureRequest, pki: Pki) -> Iterator[PostgresServer]:
    """The session's PostgreSQL server with this module's CA and users (the TLS set-up it
    had is put back afterwards: other modules share the server)."""
    server: PostgresServer = request.getfixturevalue("postgres_server")
    found = server.tls_config
    server.configure_tls(pki.server.cert_pem, pki.server.key_pem, [pki.ca.cert_pem])
    for user in USERS:
        server.create_user(user)
    yield server
    if found is not None:
        server.configure_tls(found[0], found[1], found[2])


@pytest.fixture(scope="module")
def mariadb(request: pytest.FixtureRequest, pki: Pki) -> Iterator[MariaDBServer]:
    """The session's MariaDB server with this module's CA and accounts (its TLS set-up is
    put back afterwards)."""
    server: MariaDBServer = request.getfixturevalue("mariadb_server")
    found = server.tls_config
    server.configure_tls(pki.server.cert_pem, pki.server.key_pem, [pki.ca.cert_pem])
    for user in USERS:
        server.create_user(user)
    # an account with a password and no certificate requirement, to show that the printed
    # require_secure_transport (not the account) is what refuses plaintext
    account = f"'{PASSWORD_USER}'@'%'"
    server.sql(f"DROP USER IF EXISTS {account}")
    server.sql(f"CREATE USER {account} IDENTIFIED BY '{PASSWORD}'")
    yield server
    if found is not None:
        server.configure_tls(found[0], found[1], found[2])


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "MYSQL", "LC_"))}
    return {**env, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}


def _conninfo_quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _psql_login(server: PostgresServer, pki: Pki, user: str, client: str | None,
                sslmode: str = "verify-full") -> subprocess.CompletedProcess[str]:
    """psql over TCP as ``user`` with the certificate of ``client`` (None: no certificate)."""
    params = {"host": server.host, "port": str(server.port), "user": user,
              "dbname": "postgres", "sslmode": sslmode, "sslrootcert": str(pki.ca_file)}
    if client is not None:
        params.update(sslcert=str(pki.clients[client].cert), sslkey=str(pki.clients[client].key))
    conninfo = " ".join(f"{key}='{_conninfo_quoted(value)}'" for key, value in params.items())
    return subprocess.run([PG_BIN / "psql", "-X", "-w", "-At", "-c", "SELECT current_user",
                           conninfo], env=_env(), capture_output=True, text=True, timeout=30,
                          check=False)


def _mariadb_login(server: MariaDBServer, pki: Pki, user: str, client: str | None,
                   *, tls: bool = True, password: str | None = None,
                   ) -> subprocess.CompletedProcess[str]:
    """The mariadb client over TCP as ``user`` with the certificate of ``client`` (None: no
    certificate); ``tls=False`` connects in plaintext (and so with no certificate)."""
    argv = ["mariadb", "--no-defaults", f"--host={server.host}", f"--port={server.port}",
            f"--user={user}", "-N", "-B", "-e", "SELECT current_user()"]
    if password is not None:
        argv.append(f"--password={password}")
    if not tls:  # alone: any --ssl-* option would turn TLS back on
        return _run([*argv, "--skip-ssl"])
    argv += [f"--ssl-ca={pki.ca_file}", "--ssl-verify-server-cert"]
    if client is not None:
        argv += [f"--ssl-cert={pki.clients[client].cert}", f"--ssl-key={pki.clients[client].key}"]
    return _run(argv)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=_env(), capture_output=True, text=True, timeout=30,
                          check=False)


def _refused(result: subprocess.CompletedProcess[str], *reasons: str) -> None:
    """The login failed, for one of ``reasons`` (found in the client's error)."""
    assert result.returncode != 0, f"logged in: {result.stdout}"
    assert any(reason in result.stderr for reason in reasons), result.stderr


# -- PostgreSQL ----------------------------------------------------------------------------------

@pytest.mark.parametrize("user", USERS)
def test_postgres_user_logs_in_with_own_certificate_and_no_password(
        postgres: PostgresServer, pki: Pki, user: str) -> None:
    result = _psql_login(postgres, pki, user, user)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == user


def test_postgres_refuses_a_certificate_from_another_ca(postgres: PostgresServer,
                                                        pki: Pki) -> None:
    # the server ends the TLS handshake with an alert, or the client sees the connection end
    # first (TLS 1.3 checks the client certificate after the client's handshake is done)
    _refused(_psql_login(postgres, pki, "alice", "intruder"), "alert unknown ca",
             "SSL SYSCALL error", "server closed the connection unexpectedly")


def test_postgres_refuses_tls_without_a_certificate(postgres: PostgresServer, pki: Pki) -> None:
    _refused(_psql_login(postgres, pki, "alice", None), "certificate")


def test_postgres_refuses_plaintext(postgres: PostgresServer, pki: Pki) -> None:
    _refused(_psql_login(postgres, pki, "alice", "alice", sslmode="disable"),
             'pg_hba.conf rejects connection for host "127.0.0.1", user "alice", '
             'database "postgres", no encryption')


def test_postgres_mallory_certificate_cannot_log_in_as_alice(postgres: PostgresServer,
                                                             pki: Pki) -> None:
    _refused(_psql_login(postgres, pki, "alice", "mallory"),
             'certificate authentication failed for user "alice"')


# -- MariaDB -------------------------------------------------------------------------------------

@pytest.mark.parametrize("user", USERS)
def test_mariadb_user_logs_in_with_own_certificate_and_no_password(
        mariadb: MariaDBServer, pki: Pki, user: str) -> None:
    result = _mariadb_login(mariadb, pki, user, user)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{user}@%"


def test_mariadb_refuses_a_certificate_from_another_ca(mariadb: MariaDBServer,
                                                       pki: Pki) -> None:
    # the server ends the TLS handshake with an alert, which the client may not read before
    # it sees the connection reset (TLS 1.3 checks the client certificate after the client's
    # handshake is done)
    _refused(_mariadb_login(mariadb, pki, "alice", "intruder"), "alert unknown ca",
             "Lost connection to server")


def test_mariadb_refuses_tls_without_a_certificate(mariadb: MariaDBServer, pki: Pki) -> None:
    _refused(_mariadb_login(mariadb, pki, "alice", None), "Access denied for user 'alice'")


def test_mariadb_refuses_plaintext(mariadb: MariaDBServer, pki: Pki) -> None:
    _refused(_mariadb_login(mariadb, pki, "alice", None, tls=False),
             "Access denied for user 'alice'")


def test_mariadb_refuses_plaintext_even_to_a_password_account(mariadb: MariaDBServer,
                                                              pki: Pki) -> None:
    over_tls = _mariadb_login(mariadb, pki, PASSWORD_USER, None, password=PASSWORD)
    assert over_tls.stdout.strip() == f"{PASSWORD_USER}@%", over_tls.stderr
    # MariaDB 10.11 reports require_secure_transport as a denied access
    _refused(_mariadb_login(mariadb, pki, PASSWORD_USER, None, tls=False, password=PASSWORD),
             f"Access denied for user '{PASSWORD_USER}'")


def test_mariadb_mallory_certificate_cannot_log_in_as_alice(mariadb: MariaDBServer,
                                                            pki: Pki) -> None:
    _refused(_mariadb_login(mariadb, pki, "alice", "mallory"), "Access denied for user 'alice'")


# -- the printed text, read back by the servers' own parsers -------------------------------------

AWKWARD = {"cert": "/srv/db certs/o'brien.crt", "key": '/srv/"quoted" #1/key.pem',
           "ca": "/srv/back\\slash/ca.crt"}


def test_postgres_reads_awkward_paths_back_as_printed() -> None:
    printed = config_sections(postgres_config(AWKWARD["cert"], AWKWARD["key"], AWKWARD["ca"]))
    directory = Path(tempfile.mkdtemp(prefix="limen-pgconf-"))  # traversable by postgres
    try:
        (directory / "postgresql.conf").write_text(printed[POSTGRESQL_CONF])
        os.chown(directory, pwd.getpwnam("postgres").pw_uid, -1)
        directory.chmod(0o755)
        for setting, wanted in (("ssl_cert_file", AWKWARD["cert"]),
                                ("ssl_key_file", AWKWARD["key"]),
                                ("ssl_ca_file", AWKWARD["ca"])):
            shown = _run(["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"),
                          "-D", str(directory), "-C", setting])
            assert shown.stdout.removesuffix("\n") == wanted, shown.stderr
    finally:
        shutil.rmtree(directory)


def test_mariadb_reads_awkward_paths_back_as_printed(tmp_path: Path) -> None:
    printed = config_sections(mariadb_config(AWKWARD["cert"], AWKWARD["key"], AWKWARD["ca"]))
    (tmp_path / "my.cnf").write_text(printed[MARIADB_CNF])
    shown = _run(["my_print_defaults", f"--defaults-file={tmp_path / 'my.cnf'}", "mariadbd"])
    assert shown.stdout.splitlines() == [
        f"--ssl_cert={AWKWARD['cert']}", f"--ssl_key={AWKWARD['key']}",
        f"--ssl_ca={AWKWARD['ca']}", "--require_secure_transport=ON"], shown.stderr
