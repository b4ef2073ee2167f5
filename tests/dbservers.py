"""Real PostgreSQL 15 and MariaDB 10.11 servers for the database tests, configured from the text
``lmctl auth sign --format db`` prints (``limen.cli.db_server_config``).

Fixtures (session-scoped; import them into the test module or conftest that uses them):

- ``postgres_server`` -> :class:`PostgresServer`, from :func:`start_postgres`
- ``mariadb_server`` -> :class:`MariaDBServer`, from :func:`start_mariadb`

Each server listens on 127.0.0.1 (a free port picked here, again on a collision) and on a Unix
socket in its own directory, where the superuser logs in without a password (PostgreSQL: a
``local ... trust`` line; MariaDB: root by ``unix_socket``). Over TCP the server is configured
exactly by the printed sections: ``postgresql.conf`` and ``pg_hba.conf`` lines and the
``[mariadbd]`` section are appended verbatim, accounts are made with ``mariadb_user_sql``. The
servers start with a throwaway self-signed certificate; a test installs its own CA with
``configure_tls`` (which waits until a TLS handshake presents the new server certificate and
remembers what it installed in ``tls_config``, so that a test module can put back what it
found).

The servers are shared by the session: a test configures TLS itself, ``create_user`` and
``create_database`` create or update (so two tests may both create ``alice``), and a test that
calls ``stop()`` starts the server again with ``start()``.

PostgreSQL refuses to run as root, so it runs as the Debian ``postgres`` user in a private
directory under the system temp dir (pytest's temp root is not traversable by other users);
its log is copied to ``workdir/postgres.log`` when it stops. MariaDB runs as root in
``workdir``. Neither touches a system cluster: own directories, own ports, clients with no
defaults files and a clean environment.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from limen.cli.db_server_config import (
    MARIADB_CNF,
    PG_HBA_CONF,
    POSTGRESQL_CONF,
    mariadb_config,
    mariadb_user_sql,
    postgres_config,
    section_heading,
)
from ports import free_port

__all__ = [
    "PG_BIN",
    "MariaDBServer",
    "PostgresServer",
    "config_sections",
    "mariadb_server",
    "postgres_server",
    "start_mariadb",
    "start_postgres",
]

TLSConfig = tuple[bytes, bytes, tuple[bytes, ...]]
"""What ``configure_tls`` installed: server certificate, key, client CAs (PEM)."""
PG_BIN = Path("/usr/lib/postgresql/15/bin")
MARIADBD = Path("/usr/sbin/mariadbd")
MARIADB_INSTALL_DB = Path("/usr/bin/mariadb-install-db")
MARIADB = Path("/usr/bin/mariadb")
MARIADB_ADMIN = Path("/usr/bin/mariadb-admin")
HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
TLS_TIMEOUT = 10.0
PORT_ATTEMPTS = 5
TLS_PROBE_ACCOUNT = "limen_fixture_tls_probe"  # MariaDB, locked: see start_mariadb
_PORT_IN_USE = ("Address already in use", "could not bind", "Bind on TCP/IP port")


# -- helpers -------------------------------------------------------------------------------------

def _require(path: Path, package: str) -> None:
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: run scripts/test, which installs the Debian package "
                    f"{package}", pytrace=False)


def _env() -> dict[str, str]:
    """The environment of every server and client: no PG*/MYSQL* settings from the caller, so
    a developer's shell or a system cluster cannot redirect a command."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PG", "MYSQL", "MARIADB", "LC_"))}
    env.update(LANG="C.UTF-8", LC_ALL="C.UTF-8")
    return env


def _run(argv: Sequence[str | Path], *, check: bool = True, timeout: float = 60.0,
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([os.fspath(a) for a in argv], env=_env(), cwd=cwd,
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"$ {' '.join(map(str, result.args))}\nexit code "
                             f"{result.returncode}\n--- stdout\n{result.stdout}--- stderr\n"
                             f"{result.stderr}")
    return result


def _wait_for(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(0.05)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} unreadable)"


def _write(path: Path, data: bytes, *, mode: int = 0o644, owner: int | None = None) -> None:
    """Replace ``path`` atomically, with ``mode`` (and ``owner``) set before it appears."""
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_bytes(data)
    temporary.chmod(mode)
    if owner is not None:
        os.chown(temporary, owner, -1)
    os.replace(temporary, path)


def config_sections(text: str) -> dict[str, str]:
    """The sections of a text from ``limen.cli.db_server_config`` by name (``pg_hba.conf``...),
    each with its lines verbatim (comments included)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        name = line.removeprefix("# ==> ").removesuffix(" <==")
        if line == section_heading(name):
            current = sections.setdefault(name, [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip("\n") + "\n" for name, lines in sections.items()}


def _placeholder_tls() -> tuple[bytes, bytes]:
    """A self-signed certificate and key to start with, until a test calls configure_tls."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "placeholder")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _der(cert_pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)


def _tls_peer_certificate(sock: socket.socket) -> bytes | None:
    """Finish a TLS handshake on ``sock`` (no verification) and return the server's
    certificate (DER); None when the handshake fails."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(sock) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def _postgres_server_certificate(port: int) -> bytes | None:
    """The certificate a PostgreSQL server presents after an SSLRequest, or None."""
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(struct.pack("!II", 8, 80877103))  # SSLRequest
            if _recv_exactly(sock, 1) != b"S":
                return None
            return _tls_peer_certificate(sock)
    except OSError:
        return None


def _mariadb_server_certificate(port: int) -> bytes | None:
    """The certificate a MariaDB server presents after the client's SSL request, or None."""
    client_ssl = 0x800
    capabilities = 0x1 | 0x200 | client_ssl | 0x8000  # long password, 4.1, SSL, secure conn.
    try:
        with socket.create_connection((HOST, port), timeout=5) as sock:
            header = _recv_exactly(sock, 4)
            greeting = _recv_exactly(sock, int.from_bytes(header[:3], "little"))
            if not greeting or greeting[0] != 10:  # protocol 10, not an error packet
                return None
            request = struct.pack("<IIB23x", capabilities, 1 << 24, 33)
            sock.sendall(len(request).to_bytes(3, "little") + b"\x01" + request)
            return _tls_peer_certificate(sock)
    except OSError:
        return None


def _quote_identifier(name: str, quote: str) -> str:
    return quote + name.replace(quote, quote * 2) + quote


# -- PostgreSQL ----------------------------------------------------------------------------------

class PostgresServer:
    """A PostgreSQL 15 cluster run as the ``postgres`` user; see the module docstring."""

    host = HOST

    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.workdir = workdir
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.cert_file = root / "server.crt"
        self.key_file = root / "server.key"
        self.ca_file = root / "client-ca.crt"
        self.tls_config: TLSConfig | None = None
        self.port = 0
        self.running = False
        self._uid = pwd.getpwnam("postgres").pw_uid

    @property
    def admin_dsn(self) -> str:
        """A libpq DSN for the superuser over the Unix socket (trusted there, and only there)."""
        return f"host={self.root} port={self.port} user=postgres dbname=postgres"

    def _as_postgres(self, *argv: str | Path, timeout: float = 60.0,
                     check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["runuser", "-u", "postgres", "--", *argv], timeout=timeout, check=check,
                    cwd=self.root)

    def _write_tls(self, cert_pem: bytes, key_pem: bytes, ca_pems: Sequence[bytes]) -> None:
        _write(self.cert_file, cert_pem, owner=self._uid)
        _write(self.key_file, key_pem, mode=0o600, owner=self._uid)
        _write(self.ca_file, b"".join(ca_pems), owner=self._uid)

    def initialize(self) -> None:
        """initdb, then the fixture's settings and the printed postgresql.conf/pg_hba.conf."""
        self._as_postgres(PG_BIN / "initdb", "--no-sync", "-A", "trust", "-U", "postgres",
                          "-E", "UTF8", "--locale=C.UTF-8", "-D", self.data)
        cert, key = _placeholder_tls()
        self._write_tls(cert, key, [cert])
        printed = config_sections(postgres_config(str(self.cert_file), str(self.key_file),
                                                  str(self.ca_file)))
        settings = (f"listen_addresses = '{HOST}'\nunix_socket_directories = '{self.root}'\n"
                    "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                    "max_connections = 100\n")
        conf = self.data / "postgresql.conf"
        conf.write_text(conf.read_text() + "\n# the test fixture\n" + settings
                        + "# printed by lmctl auth sign --format db\n"
                        + printed[POSTGRESQL_CONF])
        (self.data / "pg_hba.conf").write_text(
            "# the test fixture: the superuser over the Unix socket\nlocal all all trust\n"
            "# printed by lmctl auth sign --format db\n" + printed[PG_HBA_CONF])

    def start(self) -> None:
        """Start on the current port (a new free one on a collision) and wait until ready."""
        for _attempt in range(PORT_ATTEMPTS):
            if not self.port:
                self.port = free_port()
            self.log.unlink(missing_ok=True)
            result = self._as_postgres(
                PG_BIN / "pg_ctl", "start", "-D", self.data, "-l", self.log, "-w",
                "-t", f"{START_TIMEOUT:g}", "-o", f"-p {self.port}",
                timeout=START_TIMEOUT + 10, check=False)
            if result.returncode == 0:
                self.running = True
                return
            log = _tail(self.log)
            if not any(marker in log for marker in _PORT_IN_USE):
                self._kill()  # in case it is still starting after the timeout
                raise AssertionError(f"PostgreSQL did not start:\n{result.stdout}"
                                     f"{result.stderr}\n--- {self.log}\n{log}")
            self.port = 0
        raise AssertionError(f"PostgreSQL found no free port in {PORT_ATTEMPTS} attempts")

    def stop(self) -> None:
        """``pg_ctl stop -m fast``; the postmaster is killed if it does not stop in time."""
        if not self.running:
            return
        result = self._as_postgres(PG_BIN / "pg_ctl", "stop", "-D", self.data, "-m", "fast",
                                   "-w", "-t", f"{STOP_TIMEOUT:g}", timeout=STOP_TIMEOUT + 10,
                                   check=False)
        if result.returncode != 0:
            self._kill()
        self.running = False
        with contextlib.suppress(OSError):
            shutil.copyfile(self.log, self.workdir / "postgres.log")

    def _kill(self) -> None:
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            _wait_for(lambda: not _alive(pid), STOP_TIMEOUT, f"postmaster {pid} to die")

    def restart(self) -> None:
        self.stop()
        self.start()

    def configure_tls(self, server_cert_pem: bytes, server_key_pem: bytes,
                      client_ca_pems: Sequence[bytes]) -> None:
        """Install a server certificate and the CAs trusted for clients, reload, and wait until
        a TLS handshake presents the new certificate."""
        self._write_tls(server_cert_pem, server_key_pem, client_ca_pems)
        self.tls_config = (server_cert_pem, server_key_pem, tuple(client_ca_pems))
        self.sql("SELECT pg_reload_conf()")
        wanted = _der(server_cert_pem)
        _wait_for(lambda: _postgres_server_certificate(self.port) == wanted, TLS_TIMEOUT,
                  f"PostgreSQL to present the new server certificate (log: {self.log})")

    def _psql(self, statement: str, db: str = "postgres", *,
              check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run([PG_BIN / "psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.root,
                     "-p", str(self.port), "-U", "postgres", "-d", db, "-c", statement],
                    check=check)

    def sql(self, statement: str, db: str = "postgres") -> str:
        """Run ``statement`` with psql as the superuser over the socket; the ``-At`` output."""
        return self._psql(statement, db).stdout.removesuffix("\n")

    def _create(self, create: str, *, update: str | None = None) -> None:
        """Run ``create``; when the object already exists, run ``update`` (if any) instead."""
        result = self._psql(create, check=False)
        if result.returncode != 0:
            if "already exists" not in result.stderr:
                raise AssertionError(f"{create}: {result.stderr}")
            if update is not None:
                self.sql(update)

    def create_user(self, name: str, *, superuser: bool = False) -> None:
        """A login role ``name`` with no password (created, or updated if it exists)."""
        role = _quote_identifier(name, '"')
        options = "LOGIN SUPERUSER" if superuser else "LOGIN NOSUPERUSER"
        self._create(f"CREATE ROLE {role} WITH {options}", update=f"ALTER ROLE {role} {options}")

    def create_database(self, name: str, owner: str | None = None) -> None:
        """A database ``name`` (kept if it exists), owned by ``owner`` when given."""
        database = _quote_identifier(name, '"')
        self._create(f"CREATE DATABASE {database}")
        if owner is not None:
            new_owner = _quote_identifier(owner, '"')
            self.sql(f"ALTER DATABASE {database} OWNER TO {new_owner}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def start_postgres(workdir: Path) -> Iterator[PostgresServer]:
    """A started PostgreSQL server, stopped (and its files removed) on exit."""
    for binary in ("initdb", "pg_ctl", "postgres", "psql"):
        _require(PG_BIN / binary, "postgresql-15")
    workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="limen-pg-"))
    try:
        server = PostgresServer(root, workdir)
        os.chown(root, server._uid, -1)
        server.initialize()
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


# -- MariaDB -------------------------------------------------------------------------------------

class MariaDBServer:
    """A MariaDB 10.11 server run as root; see the module docstring."""

    host = HOST

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.socket = root / "mariadb.sock"
        self.error_log = root / "error.log"
        self.config = root / "my.cnf"
        self.cert_file = root / "server.crt"
        self.key_file = root / "server.key"
        self.tls_config: TLSConfig | None = None
        self.ca_file = root / "client-ca.crt"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def _write_tls(self, cert_pem: bytes, key_pem: bytes, ca_pems: Sequence[bytes]) -> None:
        _write(self.cert_file, cert_pem)
        _write(self.key_file, key_pem, mode=0o600)
        _write(self.ca_file, b"".join(ca_pems))

    def initialize(self) -> None:
        """mariadb-install-db, then an option file: the fixture's group and the printed one."""
        install = [MARIADB_INSTALL_DB, "--no-defaults", f"--datadir={self.data}", "--user=root",
                   "--auth-root-authentication-method=socket", "--skip-test-db",
                   "--skip-name-resolve"]
        # seen once with two test workers installing at the same moment: "Installation of
        # system tables failed"; a second attempt in a clean directory succeeds
        for _ in range(2):
            if _run(install, check=False, timeout=120).returncode == 0:
                break
            shutil.rmtree(self.data, ignore_errors=True)
        else:
            _run(install, timeout=120)  # the third failure is reported with its output
        cert, key = _placeholder_tls()
        self._write_tls(cert, key, [cert])
        printed = config_sections(mariadb_config(str(self.cert_file), str(self.key_file),
                                                 str(self.ca_file)))
        self.config.write_text(
            "# the test fixture\n[mariadbd]\n"
            f'datadir = "{self.data}"\nsocket = "{self.socket}"\n'
            f'log_error = "{self.error_log}"\npid_file = "{self.root / "mariadbd.pid"}"\n'
            f"bind_address = {HOST}\nskip_name_resolve\nskip_log_bin\n"
            "innodb_buffer_pool_size = 32M\ninnodb_flush_log_at_trx_commit = 0\n"
            "innodb_doublewrite = 0\nmax_connections = 100\n"
            "# TLS probes and refused handshakes must not get 127.0.0.1 blocked\n"
            "max_connect_errors = 1000000\n\n"
            "# printed by lmctl auth sign --format db\n" + printed[MARIADB_CNF])

    def _ping(self) -> bool:
        return _run([MARIADB_ADMIN, "--no-defaults", f"--socket={self.socket}", "-u", "root",
                     "ping"], check=False, timeout=10).returncode == 0

    def start(self) -> None:
        """Start on the current port (a new free one on a collision) and wait until it answers
        ``mariadb-admin ping``."""
        for _attempt in range(PORT_ATTEMPTS):
            if not self.port:
                self.port = free_port()
            if self._start_once():
                return
            log = _tail(self.error_log)
            if not any(marker in log for marker in _PORT_IN_USE):
                raise AssertionError(f"MariaDB did not start:\n{log}")
            self.port = 0
        raise AssertionError(f"MariaDB found no free port in {PORT_ATTEMPTS} attempts")

    def _start_once(self) -> bool:
        """Start mariadbd on ``self.port``; True once it answers, False if it exited."""
        self.error_log.unlink(missing_ok=True)
        with (self.root / "mariadbd.out").open("ab") as out:
            process = subprocess.Popen(
                [MARIADBD, f"--defaults-file={self.config}", "--user=root",
                 f"--port={self.port}"], env=_env(), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: process.poll() is not None or self._ping(), START_TIMEOUT,
                      f"MariaDB to answer on {self.socket} (log: {self.error_log})")
        except AssertionError:
            process.kill()
            process.wait()
            raise
        if process.poll() is not None:
            return False
        self.process = process
        return True

    def stop(self) -> None:
        """``mariadb-admin shutdown``; the server is killed if it does not exit in time."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            _run([MARIADB_ADMIN, "--no-defaults", f"--socket={self.socket}", "-u", "root",
                  f"--shutdown-timeout={STOP_TIMEOUT:g}", "shutdown"], check=False,
                 timeout=STOP_TIMEOUT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def configure_tls(self, server_cert_pem: bytes, server_key_pem: bytes,
                      client_ca_pems: Sequence[bytes]) -> None:
        """Install a server certificate and the CAs trusted for clients, ``FLUSH SSL``, and wait
        until a TLS handshake presents the new certificate."""
        self._write_tls(server_cert_pem, server_key_pem, client_ca_pems)
        self.tls_config = (server_cert_pem, server_key_pem, tuple(client_ca_pems))
        self.sql("FLUSH SSL")
        wanted = _der(server_cert_pem)
        _wait_for(lambda: _mariadb_server_certificate(self.port) == wanted, TLS_TIMEOUT,
                  f"MariaDB to present the new server certificate (log: {self.error_log})")

    def sql(self, statement: str, db: str | None = None) -> str:
        """Run ``statement`` with the mariadb client as root over the socket; the ``-N -B``
        output."""
        argv: list[str | Path] = [MARIADB, "--no-defaults", f"--socket={self.socket}", "-u",
                                  "root", "-N", "-B", "-e", statement]
        if db is not None:
            argv += ["-D", db]
        return _run(argv).stdout.removesuffix("\n")

    def create_user(self, name: str, *, grant_all_on: str | None = "*") -> None:
        """The account Limen's db agent logs in as (``mariadb_user_sql``: certificate subject
        ``/CN=<name>``, no password), replacing one of that name, with ALL privileges on the
        databases ``grant_all_on`` matches (``*``: every database; None: no grant)."""
        account = _mariadb_string(name) + "@'%'"
        self.sql(f"DROP USER IF EXISTS {account}")
        self.sql(mariadb_user_sql(name))
        if grant_all_on is not None:
            target = "*" if grant_all_on == "*" else _quote_identifier(grant_all_on, "`")
            self.sql(f"GRANT ALL PRIVILEGES ON {target}.* TO {account}")

    def create_database(self, name: str) -> None:
        self.sql(f"CREATE DATABASE IF NOT EXISTS {_quote_identifier(name, '`')}")


def _mariadb_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


@contextlib.contextmanager
def start_mariadb(workdir: Path) -> Iterator[MariaDBServer]:
    """A started MariaDB server in ``workdir``, shut down on exit."""
    _require(MARIADBD, "mariadb-server")
    _require(MARIADB_INSTALL_DB, "mariadb-server")
    _require(MARIADB, "mariadb-client")
    _require(MARIADB_ADMIN, "mariadb-client")
    workdir.mkdir(parents=True, exist_ok=True)
    server = MariaDBServer(workdir)
    server.initialize()
    server.start()
    # MariaDB greets a TCP client only if some account matches its host: a locked one lets
    # configure_tls see the handshake before a test has created its accounts.
    server.sql(f"CREATE USER {_mariadb_string(TLS_PROBE_ACCOUNT)}@'{HOST}' ACCOUNT LOCK")
    try:
        yield server
    finally:
        server.stop()


# -- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDBServer]:
    with start_mariadb(tmp_path_factory.mktemp("mariadb")) as server:
        yield server
