"""The files ``lmsh db login`` writes (``limen.client.db_profiles``) and the section editor
under them (``limen.client.ini_sections``): certificate and PKCS#8 key 0600 under
``~/.limen``, our ``[section]`` of ``~/.pg_service.conf`` / ``~/.my.cnf`` replaced in place and
removed at logout with every other section and comment kept byte for byte, ``PGSERVICEFILE``
and ``HOME`` respected, a symlinked dotfile written through its link; the saved certificate
used again only while it is valid for the current key and database.
"""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, RouteToDatabase
from limen.ca.keys import (
    generate_private_key,
    load_private_key,
    private_key_to_openssh,
)
from limen.ca.x509_certs import certificate_to_pem, sign_client_cert
from limen.client.db_profiles import (
    DbTarget,
    configured_protocol,
    current_route,
    db_files,
    forget_all_databases,
    forget_database,
    logged_in_databases,
    my_cnf_path,
    pg_service_path,
    remove_db_config,
    write_db_config,
    write_db_credentials,
)
from limen.client.ini_sections import has_section, remove_section, replace_section
from limen.client.profile import Profile, ProfileStore
from limen.errors import BadParameter

NOW = datetime.now(UTC)
OTHERS = ("# my own services\n"
          "[prod]\n"
          "host=db.example\n"
          "# keep me\n"
          "\n"
          "# about staging\n"
          "[staging]\n"
          "host=staging.example ; not a comment for libpq\n")


# -- the section editor ---------------------------------------------------------------------
def test_a_section_is_appended_after_a_blank_line_and_replaced_in_place() -> None:
    added = replace_section(OTHERS, "c-db", ["a=1", "b=2"])
    assert added == OTHERS + "\n[c-db]\na=1\nb=2\n"
    again = replace_section(added, "c-db", ["a=3"])
    assert again == OTHERS + "\n[c-db]\na=3\n"
    assert replace_section(again, "c-db", ["a=3"]) == again  # idempotent


def test_replacing_a_middle_section_keeps_the_comments_of_the_next_one() -> None:
    text = "[first]\nx=1\n[c-db]\nold=1\nold=2\n\n# about last\n[last]\ny=2"
    replaced = replace_section(text, "c-db", ["new=1"])
    assert replaced == "[first]\nx=1\n[c-db]\nnew=1\n\n# about last\n[last]\ny=2"


def test_appending_to_text_without_a_final_newline_or_to_nothing() -> None:
    assert replace_section("[a]\nx=1", "b", ["y=2"]) == "[a]\nx=1\n\n[b]\ny=2\n"
    assert replace_section("", "b", ["y=2"]) == "[b]\ny=2\n"
    assert replace_section("x\n\n", "b", ["y=2"]) == "x\n\n[b]\ny=2\n"


def test_removing_an_appended_section_gives_the_original_text_back() -> None:
    for original in (OTHERS, "", "[a]\nx=1\n"):
        assert remove_section(replace_section(original, "c-db", ["k=v"]), "c-db") == original


def test_removing_a_section_between_others_keeps_them_byte_for_byte() -> None:
    text = "[first]\nx=1\n\n[c-db]\nk=v\n\n; about last\n[last]\ny=2\n"
    assert remove_section(text, "c-db", "#;") == "[first]\nx=1\n\n; about last\n[last]\ny=2\n"
    assert remove_section("[c-db]\nk=v\n\n[last]\n", "c-db") == "[last]\n"
    assert remove_section(OTHERS, "absent") == OTHERS


def test_section_names_match_exactly() -> None:
    text = "[c-db2]\nk=v\n[c-d]\n"
    assert not has_section(text, "c-db")
    assert replace_section(text, "c-db", ["n=1"]) == text + "\n[c-db]\nn=1\n"
    assert has_section("  [c-db]  \n", "c-db")


# -- the files of one database login --------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> ProfileStore:
    return ProfileStore(tmp_path / "limen")


@pytest.fixture
def profile(store: ProfileStore) -> Profile:
    found = Profile(proxy="proxy.example:3080", user="alice", cluster="main",
                    expires=(NOW + timedelta(hours=8)).isoformat())
    key = generate_private_key()
    store.key_path(found.proxy, found.user).parent.mkdir(parents=True)
    store.key_path(found.proxy, found.user).write_text(private_key_to_openssh(key))
    store.ca_path(found.proxy, found.cluster).parent.mkdir(parents=True)
    store.ca_path(found.proxy, found.cluster).write_text("CA PEM\n")
    return found


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return {"HOME": str(home)}


def _db_cert(store: ProfileStore, profile: Profile, route: RouteToDatabase,
             ttl: timedelta = timedelta(hours=1)) -> bytes:
    ca = CertAuthority.generate(profile.cluster, CertAuthorityType.TLS)
    key = load_private_key(store.key_path(profile.proxy, profile.user).read_bytes())
    identity = Identity(username=profile.user, cluster=profile.cluster, route_to_db=route,
                        usage=("db",))
    return certificate_to_pem(sign_client_cert(ca, key.public_key(), identity, ttl)).encode()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _target(protocol: str = "postgres", service: str = "orders") -> DbTarget:
    return DbTarget(cluster="main", service=service, protocol=protocol, host="proxy.example",
                    port=5433, db_user="app", db_name="orders")


def test_credentials_are_the_certificate_and_the_login_key_as_pkcs8(
        store: ProfileStore, profile: Profile) -> None:
    cert = _db_cert(store, profile, RouteToDatabase("orders", "app", "orders"))
    files = write_db_credentials(store, profile, "orders", cert)
    assert files.cert == store.key_dir(profile.proxy) / "alice-db" / "main" / "orders.crt"
    assert files.key == files.cert.with_name("orders.key")
    assert files.ca == store.ca_path(profile.proxy, "main")
    assert files.cert.read_bytes() == cert
    key_text = files.key.read_text()
    assert key_text.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, not OpenSSH
    login_key = load_private_key(store.key_path(profile.proxy, profile.user).read_bytes())
    der = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert load_private_key(key_text).public_key().public_bytes(*der) == \
        login_key.public_key().public_bytes(*der)
    assert (_mode(files.cert), _mode(files.key)) == (0o600, 0o600)
    assert logged_in_databases(store, profile) == ["orders"]
    with pytest.raises(BadParameter, match="not a PEM certificate"):
        write_db_credentials(store, profile, "bad", b"not a certificate")
    assert not db_files(store, profile, "bad").key.exists()


def test_database_names_that_would_escape_the_directory_are_refused(
        store: ProfileStore, profile: Profile) -> None:
    for name in ("../x", ".hidden", "a/b", "a]b", "a\nb", ""):
        with pytest.raises(BadParameter):
            db_files(store, profile, name)


def test_the_pg_service_section(store: ProfileStore, profile: Profile,
                                env: dict[str, str]) -> None:
    path = Path(env["HOME"]) / ".pg_service.conf"
    path.write_text(OTHERS)
    path.chmod(0o644)
    files = db_files(store, profile, "orders")
    assert write_db_config(_target(), files, env) == path
    text = path.read_text()
    assert text.startswith(OTHERS)
    section = text[len(OTHERS):].splitlines()
    assert section[1] == "[main-orders]"
    assert section[3:] == [
        "host=proxy.example", "port=5433", "user=app", "dbname=orders", "sslmode=verify-full",
        f"sslrootcert={files.ca}", f"sslcert={files.cert}", f"sslkey={files.key}"]
    assert _mode(path) == 0o600
    write_db_config(_target(), files, env)
    assert path.read_text() == text  # the same login twice: one section
    assert configured_protocol("main", "orders", env) == "postgres"
    assert remove_db_config("main", "orders", env) == [path]
    assert path.read_text() == OTHERS


def test_pgservicefile_is_where_the_section_goes(store: ProfileStore, profile: Profile,
                                                 tmp_path: Path, env: dict[str, str]) -> None:
    elsewhere = tmp_path / "conf" / "services.conf"
    env = {**env, "PGSERVICEFILE": str(elsewhere)}
    assert pg_service_path(env) == elsewhere
    write_db_config(_target(), db_files(store, profile, "orders"), env)
    assert "[main-orders]" in elsewhere.read_text()
    assert not (Path(env["HOME"]) / ".pg_service.conf").exists()


def test_the_my_cnf_group_quotes_its_values(store: ProfileStore, tmp_path: Path,
                                            env: dict[str, str]) -> None:
    odd = ProfileStore(tmp_path / 'my "limen" #1')
    odd_profile = Profile(proxy="p:1", user="bob", cluster="main", expires=NOW.isoformat())
    path = my_cnf_path(env)
    path.write_text("[client]\nuser=me\n")
    files = db_files(odd, odd_profile, "shop")
    write_db_config(_target("mysql", "shop"), files, env)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["[client]", "user=me", ""]
    assert lines[3] == "[client-main-shop]"
    def quoted(path: Path) -> str:
        return '"' + str(path).replace('"', '\\"') + '"'

    assert '\\"limen\\" #1' in quoted(files.cert)
    assert lines[5:] == [
        'host="proxy.example"', "port=5433", 'user="app"', 'database="orders"',
        f"ssl-ca={quoted(files.ca)}", f"ssl-cert={quoted(files.cert)}",
        f"ssl-key={quoted(files.key)}", "ssl-verify-server-cert"]
    assert configured_protocol("main", "shop", env) == "mysql"
    remove_db_config("main", "shop", env)
    assert path.read_text() == "[client]\nuser=me\n"


def test_a_symlinked_dotfile_stays_a_symlink(store: ProfileStore, profile: Profile,
                                             tmp_path: Path, env: dict[str, str]) -> None:
    real = tmp_path / "dotfiles" / "my.cnf"
    real.parent.mkdir()
    real.write_text("[mysql]\nprompt=x\n")
    link = Path(env["HOME"]) / ".my.cnf"
    link.symlink_to(real)
    write_db_config(_target("mysql"), db_files(store, profile, "orders"), env)
    assert link.is_symlink()
    assert "[client-main-orders]" in real.read_text()


def test_values_libpq_cannot_read_are_refused(store: ProfileStore, profile: Profile,
                                              env: dict[str, str]) -> None:
    bad = DbTarget(cluster="main", service="orders", protocol="postgres", host="h",
                   port=1, db_user="a\nsslmode=disable", db_name="")
    with pytest.raises(BadParameter):
        write_db_config(bad, db_files(store, profile, "orders"), env)
    assert not (Path(env["HOME"]) / ".pg_service.conf").exists()


def test_a_saved_certificate_is_used_only_while_it_fits(store: ProfileStore,
                                                        profile: Profile) -> None:
    route = RouteToDatabase("orders", "app", "orders")
    assert current_route(store, profile, "orders") is None
    write_db_credentials(store, profile, "orders", _db_cert(store, profile, route))
    assert current_route(store, profile, "orders") == route
    assert current_route(store, profile, "orders", now=NOW + timedelta(hours=2)) is None
    # a certificate for another database saved under this name is not this database's
    write_db_credentials(store, profile, "shop", _db_cert(store, profile, route))
    assert current_route(store, profile, "shop") is None
    # after a new lmsh login (a new key), the old certificate no longer fits
    store.key_path(profile.proxy, profile.user).write_text(
        private_key_to_openssh(generate_private_key()))
    assert current_route(store, profile, "orders") is None


def test_logout_removes_files_and_sections(store: ProfileStore, profile: Profile,
                                           env: dict[str, str]) -> None:
    pg = Path(env["HOME"]) / ".pg_service.conf"
    pg.write_text(OTHERS)
    for name, protocol in (("orders", "postgres"), ("shop", "mysql")):
        cert = _db_cert(store, profile, RouteToDatabase(name, "app", ""))
        files = write_db_credentials(store, profile, name, cert)
        write_db_config(_target(protocol, name), files, env)
    assert forget_database(store, profile, "orders", env)
    assert not forget_database(store, profile, "orders", env)  # nothing left to remove
    assert pg.read_text() == OTHERS
    assert logged_in_databases(store, profile) == ["shop"]
    assert forget_all_databases(store, profile, env) == ["shop"]
    assert "[client-main-shop]" not in my_cnf_path(env).read_text()
    assert not db_files(store, profile, "shop").key.exists()
