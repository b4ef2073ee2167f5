"""The client side of database access against a real ``limen start``: ``lmctl auth sign
--format db`` (online through the auth API, and offline on a stopped cluster's data
directory) writes a key 0600, a certificate of the DB CA for the hosts given and the DB CA,
and prints the PostgreSQL and MariaDB configuration with their absolute paths; ``lmctl auth
export --type db-client`` is the DB CA; ``lmsh db ls`` lists the online databases the user's
roles allow; ``lmsh proxy db`` carries a plaintext PostgreSQL client to the proxy over TLS
with the database certificate; ``lmsh db login`` fetches the database certificate through
the proxy and writes the pg_service.conf section that ``lmsh db env`` points at and ``lmsh db
logout`` (and ``lmsh logout``) removes.

Databases are put online by a heartbeat the test sends as the cluster's admin (what a proxy
relays for a db agent); no database server runs here (psql through the proxy is tested
elsewhere). Every ``lmsh`` gets its own ``HOME``: nothing touches the runner's dotfiles.
"""

from __future__ import annotations

import asyncio
import json
import select
import stat
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from limen.auth.client import AuthClient
from limen.ca.host_credentials import HostCredentials
from limen.ca.x509_certs import identity_from_cert

from .cluster import (
    ClusterFactory,
    LimenCluster,
    LimenUser,
    clean_env,
    command,
    describe,
    run,
)

NAME = "dbc"
DEADLINE = 20.0
ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: dbapp}
spec:
  allow:
    db_labels: {env: dev}
    db_users: [app]
    db_names: [orders]
"""


def _resource(name: str, env: str, protocol: str = "postgres") -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
            "metadata": {"name": name, "labels": {"env": env}},
            "spec": {"kind": "db", "protocol": protocol, "address": "127.0.0.1:5432",
                     "database": "orders", "description": f"{name} database"}}


def _online(cluster: LimenCluster, *resources: dict[str, Any]) -> None:
    """Heartbeat ``resources`` as a db agent's, relayed as the proxy would (the admin may)."""
    async def beat() -> None:
        creds = HostCredentials.load(cluster.data_dir / "admin")
        async with AuthClient(cluster.auth, creds) as client:
            for resource in resources:
                await client.call("POST", "/v1/presence/heartbeat", {
                    "resource": resource, "host_id": "db-agent-1", "tunnel": "test",
                    "cluster": cluster.name, "role": "db"})

    asyncio.run(beat())


@dataclass
class Site:
    cluster: LimenCluster
    user: LimenUser
    home: Path

    def env(self) -> dict[str, str]:
        return clean_env(LIMEN_HOME=self.user.home, HOME=self.home, PGSERVICEFILE=None,
                         PGSERVICE=None, MYSQL_GROUP_SUFFIX=None)

    def lmsh(self, *args: str, check: bool = True) -> Any:
        return run([command("lmsh"), *args], env=self.env(), check=check)


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Site:
    cluster = module_clusters(NAME)
    cluster.lmctl("apply", "-f", "-", input=ROLE)
    user = cluster.signed_up_user("dana", roles=["dbapp"])
    user.login()
    return Site(cluster, user, tmp_path_factory.mktemp("home"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- lmctl auth sign --format db ----------------------------------------------------------------
def _check_signed(cluster: LimenCluster, prefix: Path, output: str, hosts: list[str],
                  ttl: timedelta) -> None:
    key_path, crt, cas = (prefix.with_name(prefix.name + ext) for ext in (".key", ".crt",
                                                                           ".cas"))
    assert _mode(key_path) == 0o600
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    cert = x509.load_pem_x509_certificate(crt.read_bytes())
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [h for h in hosts if not h[0].isdigit()]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == \
        [h for h in hosts if h[0].isdigit()]
    lifetime = cert.not_valid_after_utc - datetime.now(UTC)
    assert ttl - timedelta(minutes=5) < lifetime <= ttl
    db_ca = cluster.lmctl("auth", "export", "--type", "db-client").stdout
    assert cas.read_text() == db_ca
    cert.verify_directly_issued_by(x509.load_pem_x509_certificates(db_ca.encode())[0])
    # the configuration names the files by their absolute paths
    assert f"ssl_cert_file = '{crt}'" in output
    assert f"ssl_key_file = '{key_path}'" in output
    assert f"ssl_ca_file = '{cas}'" in output
    assert f'ssl_ca = "{cas}"' in output
    assert "hostssl all all all cert" in output
    assert "[mariadbd]" in output


def test_lmctl_auth_sign_format_db_online(site: Site, tmp_path: Path) -> None:
    cluster = site.cluster
    prefix = tmp_path / "pg" / "server"
    prefix.parent.mkdir()
    hosts = ["db.example", "db2.example", "127.0.0.1"]
    signed = cluster.lmctl("auth", "sign", "--format", "db", "--host", ",".join(hosts),
                           "--out", prefix, "--ttl", "48h")
    _check_signed(cluster, prefix, signed.stdout, hosts, timedelta(hours=48))
    events = [e for e in cluster.audit("cert.create") if e.get("cert_type") == "db_server"]
    assert events[-1]["hosts"] == hosts

    too_long = cluster.lmctl("auth", "sign", "--format", "db", "--host", "db.example", "--out",
                             tmp_path / "long", "--ttl", "100000h", check=False)
    assert too_long.returncode != 0, describe(too_long)
    assert "at most 10 years" in too_long.stderr
    assert not (tmp_path / "long.key").exists()
    missing_dir = cluster.lmctl("auth", "sign", "--format", "db", "--host", "db.example",
                                "--out", tmp_path / "nowhere" / "server", check=False)
    assert missing_dir.returncode != 0, describe(missing_dir)
    assert "is not a directory" in missing_dir.stderr


def test_lmctl_auth_sign_format_db_offline(clusters: ClusterFactory, tmp_path: Path) -> None:
    stopped = clusters("dboff")
    stopped.stop()
    prefix = tmp_path / "server"
    signed = stopped.lmctl("auth", "sign", "--format", "db", "--host", "127.0.0.1", "--out",
                           prefix)
    _check_signed(stopped, prefix, signed.stdout, ["127.0.0.1"], timedelta(hours=2160))
    events = [e for e in stopped.audit("cert.create") if e.get("cert_type") == "db_server"]
    assert events[-1]["user"] == "admin"


def test_lmctl_auth_export_db_client_is_the_db_ca(site: Site) -> None:
    cluster = site.cluster
    alias = cluster.lmctl("auth", "export", "--type", "db-client").stdout
    assert alias == cluster.lmctl("auth", "export", "--type", "db").stdout
    assert alias.startswith("-----BEGIN CERTIFICATE-----")
    assert alias != cluster.lmctl("auth", "export", "--type", "tls").stdout


# -- lmsh db ------------------------------------------------------------------------------------
def test_lmsh_db_ls_lists_the_online_databases_the_roles_allow(site: Site) -> None:
    nothing = site.lmsh("db", "ls")
    assert nothing.stdout == ""
    assert "no database you may use is online" in nothing.stderr
    _online(site.cluster, _resource("orders-dev", "dev"), _resource("orders-prod", "prod"))
    listed = json.loads(site.lmsh("db", "ls", "-o", "json").stdout)["items"]
    assert [(i["name"], i["protocol"], i["db_users"], i["database"]) for i in listed] == [
        ("orders-dev", "postgres", ["app"], "orders")]  # prod: the role allows env=dev only
    table = site.lmsh("db", "ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "PROTOCOL", "DESCRIPTION", "LABELS", "ALLOWED", "USERS"]
    assert table[1].split() == ["orders-dev", "postgres", "orders-dev", "database", "env=dev",
                                "app"]


def _serving(process: subprocess.Popen[str]) -> int:
    """The port ``lmsh proxy db`` printed it serves on."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], DEADLINE)
    assert ready, "lmsh proxy db printed nothing"
    line = process.stdout.readline()
    assert " on 127.0.0.1:" in line, line + (process.stderr.read() if process.stderr else "")
    return int(line.split(" on 127.0.0.1:")[1].split()[0])


def test_lmsh_proxy_db_carries_a_plaintext_client_to_the_proxy(site: Site) -> None:
    _online(site.cluster, _resource("orders-dev", "dev"))
    with subprocess.Popen([command("lmsh"), "proxy", "db", "orders-dev", "--port", "0"],
                          env=site.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        try:
            port = _serving(process)
            # no database agent runs here: the proxy itself answers, after TLS with the
            # database certificate (a failure of that hop would be lmsh's "lmsh: ..." error)
            with pytest.raises(psycopg.OperationalError) as refused:
                psycopg.connect(host="127.0.0.1", port=port, user="app", dbname="orders",
                                sslmode="disable", connect_timeout=int(DEADLINE))
            assert "orders-dev" in str(refused.value)
            assert "lmsh:" not in str(refused.value)
        finally:
            process.terminate()
            process.wait(DEADLINE)
    site.lmsh("db", "logout", "orders-dev")


def test_lmsh_db_login_env_and_logout(site: Site) -> None:
    _online(site.cluster, _resource("orders-dev", "dev"))
    pg_service = site.home / ".pg_service.conf"
    pg_service.write_text("[mine]\nhost=elsewhere\n")
    logged_in = site.lmsh("db", "login", "orders-dev")
    assert "psql service=dbc-orders-dev" in logged_in.stdout, describe(logged_in)

    key_dir = site.user.key_dir / "dana-db" / NAME
    cert = x509.load_pem_x509_certificate((key_dir / "orders-dev.crt").read_bytes())
    identity = identity_from_cert(cert)
    assert identity is not None
    assert identity.route_to_db is not None
    assert (identity.route_to_db.service, identity.route_to_db.user,
            identity.route_to_db.name) == ("orders-dev", "app", "orders")
    assert (key_dir / "orders-dev.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert _mode(key_dir / "orders-dev.key") == 0o600

    host, port = site.cluster.listeners["postgres"].rsplit(":", 1)
    text = pg_service.read_text()
    assert text.startswith("[mine]\nhost=elsewhere\n\n[dbc-orders-dev]\n")
    for line in (f"host={host}", f"port={port}", "user=app", "dbname=orders",
                 "sslmode=verify-full", f"sslcert={key_dir / 'orders-dev.crt'}",
                 f"sslkey={key_dir / 'orders-dev.key'}",
                 f"sslrootcert={site.user.key_dir / 'cas' / (NAME + '.pem')}"):
        assert line in text.splitlines(), text
    assert _mode(pg_service) == 0o600

    env = json.loads(site.lmsh("db", "env", "orders-dev", "-o", "json").stdout)
    assert env == {"PGSERVICEFILE": str(pg_service), "PGSERVICE": "dbc-orders-dev"}

    refused = site.lmsh("db", "login", "orders-dev", "--db-user", "root", check=False)
    assert refused.returncode != 0, describe(refused)
    assert "may not connect to orders-dev as root" in refused.stderr

    site.lmsh("db", "logout")
    assert pg_service.read_text() == "[mine]\nhost=elsewhere\n"
    assert not (key_dir / "orders-dev.crt").exists()
    again = site.lmsh("db", "env", "orders-dev", check=False)
    assert "not logged in to database orders-dev" in again.stderr

    # lmsh logout forgets the databases too (this ends dana's login: keep this test last)
    site.lmsh("db", "login", "orders-dev")
    assert "[dbc-orders-dev]" in pg_service.read_text()
    site.lmsh("logout")
    assert pg_service.read_text() == "[mine]\nhost=elsewhere\n"
    assert not key_dir.exists()
