"""The files ``lmsh db login`` leaves on disk so stock database clients connect through Limen.

Under the state directory (:class:`~limen.client.profile.ProfileStore`)::

    keys/<proxy>/<user>-db/<cluster>/<db>.crt   the database certificate from POST db/certs
    keys/<proxy>/<user>-db/<cluster>/<db>.key   the user's private key as PKCS#8 PEM (libpq and
                                                mysql cannot read the OpenSSH form)
    keys/<proxy>/cas/<cluster>.pem              the cluster's TLS CA saved at login: it verifies
                                                the proxy's database listeners

and one section per database in the client's own configuration, replaced in place at every
login and removed at logout, every other section and comment kept byte for byte:

* ``$PGSERVICEFILE`` or ``$HOME/.pg_service.conf``: ``[<cluster>-<db>]`` (``psql
  "service=<cluster>-<db>"``);
* ``$HOME/.my.cnf``: ``[client-<cluster>-<db>]`` (``mysql
  --defaults-group-suffix=-<cluster>-<db>``).

Every file is written atomically with mode 0600 (a symlinked configuration file is written
through its link). No network here; called by ``limen.client.db_access`` and the ``lmsh db``
commands (``limen.cli.lmsh_db``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from limen.ca.identity import RouteToDatabase
from limen.ca.keys import load_private_key, private_key_to_pem
from limen.ca.x509_certs import identity_from_cert
from limen.client.ini_sections import has_section, remove_section, replace_section
from limen.client.profile import Profile, ProfileStore
from limen.errors import BadParameter
from limen.files import private_dir, replace_atomically, write_private

__all__ = [
    "MYSQL",
    "POSTGRES",
    "DbFiles",
    "DbTarget",
    "configured_protocol",
    "current_route",
    "db_files",
    "forget_all_databases",
    "forget_database",
    "logged_in_databases",
    "my_cnf_path",
    "mysql_group_suffix",
    "pg_service_path",
    "remove_db_config",
    "render_my_cnf",
    "render_pg_service",
    "service_name",
    "write_db_config",
    "write_db_credentials",
]

POSTGRES = "postgres"
MYSQL = "mysql"
_MANAGED = "# written by lmsh db login; lmsh db logout removes this section"
_MY_CNF_COMMENTS = "#;"
_RENEW_MARGIN = timedelta(minutes=1)


@dataclass(frozen=True)
class DbFiles:
    """Where one database's certificate, key and trusted CA are."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class DbTarget:
    """What the configuration section of one database says."""

    cluster: str
    service: str
    """The database's name (its Resource)."""
    protocol: str
    """``postgres`` or ``mysql``."""
    host: str
    port: int
    db_user: str
    db_name: str
    """The database to open; empty when not known."""


# -- names and paths -------------------------------------------------------------------------
def service_name(cluster: str, service: str) -> str:
    """The pg_service.conf section: ``<cluster>-<db>``."""
    return f"{cluster}-{service}"


def mysql_group_suffix(cluster: str, service: str) -> str:
    """What ``mysql --defaults-group-suffix=`` takes: ``-<cluster>-<db>``."""
    return f"-{cluster}-{service}"


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def pg_service_path(env: Mapping[str, str] | None = None) -> Path:
    """``$PGSERVICEFILE``, else ``$HOME/.pg_service.conf`` (as libpq looks them up)."""
    env = os.environ if env is None else env
    return Path(env["PGSERVICEFILE"]) if env.get("PGSERVICEFILE") else \
        _home(env) / ".pg_service.conf"


def my_cnf_path(env: Mapping[str, str] | None = None) -> Path:
    """``$HOME/.my.cnf``, the option file of the user's MySQL/MariaDB clients."""
    return _home(os.environ if env is None else env) / ".my.cnf"


def _db_dir(store: ProfileStore, profile: Profile, cluster: str = "") -> Path:
    return store.key_dir(profile.proxy) / f"{profile.user}-db" / (cluster or profile.cluster)


def db_files(store: ProfileStore, profile: Profile, service: str, cluster: str = ""
             ) -> DbFiles:
    """The paths of ``service``'s certificate and key, and of the cluster's TLS CA.
    ``cluster``: a leaf cluster's database (its own folder; the CA stays the one of the
    profile's cluster, whose proxy the client talks to)."""
    if not service or service.startswith(".") or any(
            c in "/\\[]" or ord(c) < 0x20 or ord(c) == 0x7F for c in service):
        raise BadParameter(f"invalid database name {service!r}")
    folder = _db_dir(store, profile, cluster)
    return DbFiles(cert=folder / f"{service}.crt", key=folder / f"{service}.key",
                   ca=store.ca_path(profile.proxy, profile.cluster))


# -- credentials -------------------------------------------------------------------------------
def write_db_credentials(store: ProfileStore, profile: Profile, service: str,
                         cert_pem: bytes, cluster: str = "") -> DbFiles:
    """Save the database certificate and, beside it, the user's key as PKCS#8 PEM (0600)."""
    files = db_files(store, profile, service, cluster)
    try:  # refuse to save what no client could read
        x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise BadParameter("the database certificate received is not a PEM certificate") \
            from None
    key = load_private_key(store.key_path(profile.proxy, profile.user).read_bytes())
    write_private(files.key, private_key_to_pem(key))
    write_private(files.cert, cert_pem)
    return files


def current_route(store: ProfileStore, profile: Profile, service: str,
                  now: datetime | None = None, cluster: str = "") -> RouteToDatabase | None:
    """The database user and name of ``service``'s saved certificate while it can be used:
    it exists with its key, is for the user's current key and for ``service``, and lives one
    more minute. None otherwise (log in to the database again)."""
    files = db_files(store, profile, service, cluster)
    if not (files.cert.is_file() and files.key.is_file()):
        return None
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        identity = identity_from_cert(cert)
        key = load_private_key(store.key_path(profile.proxy, profile.user).read_bytes())
    except (ValueError, BadParameter, OSError):
        return None
    route = identity.route_to_db if identity is not None else None
    if route is None or route.service != service:
        return None
    if cert.not_valid_after_utc - _RENEW_MARGIN <= (now or datetime.now(UTC)):
        return None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return None  # saved before the last lmsh login, which made a new key
    return route


def logged_in_databases(store: ProfileStore, profile: Profile) -> list[str]:
    """The databases of the profile's cluster with a saved certificate, sorted."""
    folder = _db_dir(store, profile)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.crt"))


# -- configuration sections ---------------------------------------------------------------------
def _pg_value(value: str, what: str) -> str:
    """A pg_service.conf value: libpq takes the rest of the line, no quoting, no escapes."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value) or value != value.strip():
        raise BadParameter(f"the {what} {value!r} cannot be written to a pg_service.conf file "
                           "(a control character, or spaces at an end)")
    return value


def _option_value(value: str, what: str) -> str:
    """A MySQL option-file value in double quotes (``\\\\`` and ``\\"`` escaped), so spaces,
    ``#`` and quotes survive."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise BadParameter(f"the {what} {value!r} contains a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_pg_service(target: DbTarget, files: DbFiles) -> list[str]:
    """The lines of the ``[<cluster>-<db>]`` section (header not included)."""
    lines = [_MANAGED, f"host={_pg_value(target.host, 'host')}", f"port={target.port}",
             f"user={_pg_value(target.db_user, 'database user')}"]
    if target.db_name:
        lines.append(f"dbname={_pg_value(target.db_name, 'database name')}")
    return [*lines, "sslmode=verify-full",
            f"sslrootcert={_pg_value(str(files.ca), 'CA path')}",
            f"sslcert={_pg_value(str(files.cert), 'certificate path')}",
            f"sslkey={_pg_value(str(files.key), 'key path')}"]


def render_my_cnf(target: DbTarget, files: DbFiles) -> list[str]:
    """The lines of the ``[client-<cluster>-<db>]`` group (header not included)."""
    lines = [_MANAGED, f"host={_option_value(target.host, 'host')}", f"port={target.port}",
             f"user={_option_value(target.db_user, 'database user')}"]
    if target.db_name:
        lines.append(f"database={_option_value(target.db_name, 'database name')}")
    return [*lines, f"ssl-ca={_option_value(str(files.ca), 'CA path')}",
            f"ssl-cert={_option_value(str(files.cert), 'certificate path')}",
            f"ssl-key={_option_value(str(files.key), 'key path')}",
            "ssl-verify-server-cert"]


def _my_group(cluster: str, service: str) -> str:
    return "client" + mysql_group_suffix(cluster, service)


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _write(path: Path, text: str) -> None:
    real = path.resolve()  # a dotfile symlinked elsewhere stays a symlink
    if not real.parent.exists():
        private_dir(real.parent)
    replace_atomically(real, text, 0o600)


def write_db_config(target: DbTarget, files: DbFiles,
                    env: Mapping[str, str] | None = None) -> Path:
    """Put ``target``'s section in the file its protocol's client reads; returns that file."""
    if target.protocol == POSTGRES:
        path, name, body, comments = (pg_service_path(env), service_name(
            target.cluster, target.service), render_pg_service(target, files), "#")
    elif target.protocol == MYSQL:
        path, name, body, comments = (my_cnf_path(env), _my_group(
            target.cluster, target.service), render_my_cnf(target, files), _MY_CNF_COMMENTS)
    else:
        raise BadParameter(f"unknown database protocol {target.protocol!r}")
    old = _read(path)
    new = replace_section(old, name, body, comments)
    if new != old or not path.exists():
        _write(path, new)
    return path


def configured_protocol(cluster: str, service: str,
                        env: Mapping[str, str] | None = None) -> str | None:
    """``postgres`` or ``mysql`` by the section ``lmsh db login`` wrote, None without one."""
    if has_section(_read(pg_service_path(env)), service_name(cluster, service)):
        return POSTGRES
    if has_section(_read(my_cnf_path(env)), _my_group(cluster, service)):
        return MYSQL
    return None


def remove_db_config(cluster: str, service: str,
                     env: Mapping[str, str] | None = None) -> list[Path]:
    """Remove ``service``'s sections from both files; returns the files that changed."""
    changed = []
    for path, name, comments in (
            (pg_service_path(env), service_name(cluster, service), "#"),
            (my_cnf_path(env), _my_group(cluster, service), _MY_CNF_COMMENTS)):
        old = _read(path)
        new = remove_section(old, name, comments)
        if new != old:
            _write(path, new)
            changed.append(path)
    return changed


# -- logout ------------------------------------------------------------------------------------
def forget_database(store: ProfileStore, profile: Profile, service: str,
                    env: Mapping[str, str] | None = None) -> bool:
    """Remove ``service``'s certificate, key and configuration sections; False when there
    was nothing to remove."""
    files = db_files(store, profile, service)
    found = False
    for path in (files.cert, files.key):
        if path.exists():
            path.unlink()
            found = True
    return bool(remove_db_config(profile.cluster, service, env)) or found


def forget_all_databases(store: ProfileStore, profile: Profile,
                         env: Mapping[str, str] | None = None) -> list[str]:
    """:func:`forget_database` for every database with a saved certificate; their names."""
    names = logged_in_databases(store, profile)
    for name in names:
        forget_database(store, profile, name, env)
    return names
