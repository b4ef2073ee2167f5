"""End-to-end acceptance of local login against a running ``limen start``: sign-up with a
CA-pinned link, ``lmsh login`` (password + TOTP) writing the state layout of
docs/architecture.md, the SSH certificate as ``ssh-keygen`` sees it, ssh-agent,
``lmsh status``/``logout``, every refusal (wrong password or code, replayed code, lockout,
unknown user, expired or used link) with its audit event, no secret in the audit log, and join
tokens through the proxy.

One cluster serves the module; each test uses users of its own where failures would count
towards another test's lockout.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from limen.auth.join_client import join_via_proxy
from limen.errors import AccessDenied

from .cluster import (
    ClusterFactory,
    LimenCluster,
    LimenUser,
    SshAgent,
    clean_env,
    describe,
    inspect_ssh_cert,
    run,
    ssh_fingerprint,
    tree_modes,
    wait_for,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"
DENIED = "error: invalid password or one-time code"
DEV_MAX_TTL = timedelta(hours=8)  # examples/gitops/roles/dev.yaml
CLOCK_SKEW = timedelta(minutes=1)  # certificates start this much before they are issued


@dataclass(frozen=True)
class Session:
    """A successful ``lmsh login`` and the wall-clock interval it ran in."""

    user: LimenUser
    started: float
    finished: float


def login(user: LimenUser, ttl: str | None = None) -> Session:
    started = time.time()
    user.login(ttl=ttl)
    return Session(user, started, time.time())


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    cluster = module_clusters("login")
    cluster.lmctl("apply", "-f", EXAMPLES)
    return cluster


@pytest.fixture(scope="module")
def ca(site: LimenCluster) -> dict[str, str]:
    """The cluster's CA fingerprints, as ``lmctl status`` prints them."""
    fingerprints: dict[str, str] = site.status()["ca_fingerprints"]
    return fingerprints


@dataclass(frozen=True)
class SignedUp:
    user: LimenUser
    tree: dict[str, int]
    """``tree_modes`` of the user's LIMEN_HOME right after sign-up."""


@pytest.fixture(scope="module")
def dave_signup(site: LimenCluster) -> SignedUp:
    """Signed up (without --insecure) with the link of ``lmctl users add``."""
    user = site.user("dave")
    user.signup(site.add_user("dave", roles=["dev"], logins=["dave", "ubuntu"])["url"])
    return SignedUp(user, tree_modes(user.home))


@pytest.fixture(scope="module")
def dave(dave_signup: SignedUp) -> LimenUser:
    return dave_signup.user


@pytest.fixture(scope="module")
def dave_session(dave: LimenUser) -> Session:
    return login(dave)


def local_time(timestamp: float) -> datetime:
    """A Unix time as the naive local time ``ssh-keygen -L`` prints."""
    return datetime.fromtimestamp(timestamp)


def expected_layout(user: LimenUser, cluster: str, *, logged_in: bool) -> dict[str, int]:
    """The user state (docs/architecture.md) for one proxy and cluster: dirs 0700, files 0600."""
    proxy = f"keys/{user.proxy.replace(':', '_')}"
    layout = {"./": 0o700, "keys/": 0o700, f"{proxy}/": 0o700, f"{proxy}/cas/": 0o700,
              f"{proxy}/cas/{cluster}.pem": 0o600}
    if logged_in:
        layout |= {
            "current-profile": 0o600, "known_hosts": 0o600, "profiles/": 0o700,
            f"profiles/{user.proxy.replace(':', '_')}.yaml": 0o600,
            f"{proxy}/{user.name}": 0o600, f"{proxy}/{user.name}.pub": 0o600,
            f"{proxy}/{user.name}.crt": 0o600, f"{proxy}/{user.name}-ssh/": 0o700,
            f"{proxy}/{user.name}-ssh/{cluster}-cert.pub": 0o600,
        }
    return layout


def last_event(site: LimenCluster, event_type: str, user: str | None = None) -> dict[str, Any]:
    events = site.audit(event_type, user=user)
    assert events, f"no {event_type} event for {user}"
    return events[-1]


def audit_log_bytes(site: LimenCluster) -> bytes:
    """Everything under DATA_DIR/log, concatenated."""
    return b"".join(p.read_bytes() for p in sorted((site.data_dir / "log").rglob("*"))
                    if p.is_file())


# -- sign-up and a successful login ------------------------------------------------------


def test_signup_pins_the_ca_carried_by_the_link(site: LimenCluster, dave_signup: SignedUp,
                                                ca: dict[str, str]) -> None:
    dave = dave_signup.user
    pinned = dave.key_dir / "cas" / f"{site.name}.pem"
    certificate = x509.load_pem_x509_certificate(pinned.read_bytes())
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = "sha256:" + hashlib.sha256(spki).hexdigest()
    assert pin == ca["tls"]
    link_pin = urllib.parse.parse_qs(urllib.parse.urlsplit(dave.signup_link or "").query)
    assert link_pin["ca_pin"] == [pin]
    assert dave_signup.tree == expected_layout(dave, site.name, logged_in=False)


def test_signup_checks_the_pin_before_sending_the_link(site: LimenCluster,
                                                       dave: LimenUser) -> None:
    stranger = site.user("mallory")
    forged = (dave.signup_link or "").split("?")[0] + "?ca_pin=sha256:" + "ab" * 32
    result = stranger.signup(forged, check=False)
    assert result.returncode == 1, describe(result)
    # Refused for the pin, not as a used link: the token never reached the proxy.
    assert result.stderr.splitlines() == [
        f"error: the proxy {site.web} presented a CA that does not match the pin "
        f"sha256:{'ab' * 32}; refusing to continue"]
    assert not (stranger.key_dir / "cas").exists()


def test_login_writes_exactly_the_design_layout(site: LimenCluster,
                                                dave_session: Session) -> None:
    dave = dave_session.user
    assert tree_modes(dave.home) == expected_layout(dave, site.name, logged_in=True)


def test_known_hosts_trusts_the_host_ca(dave_session: Session, ca: dict[str, str]) -> None:
    lines = (dave_session.user.home / "known_hosts").read_text().splitlines()
    assert len(lines) == 1, lines
    marker, hosts, key_type, blob = lines[0].split()
    assert (marker, hosts, key_type) == ("@cert-authority", "*", "ssh-ed25519")
    assert ssh_fingerprint(f"{key_type} {blob}") == ca["host"]


def test_ssh_certificate_carries_logins_identity_and_role_ttl(
        site: LimenCluster, dave_session: Session, ca: dict[str, str]) -> None:
    cert = inspect_ssh_cert(dave_session.user.ssh_cert_path(site.name))
    assert cert.kind == "user"
    assert cert.signing_ca == ca["user"]
    assert sorted(cert.principals) == ["dave", "ubuntu"]
    assert "limen-identity@limen.dev" in cert.extensions
    assert cert.critical_options == ()
    assert_lifetime(cert.valid_from, cert.valid_to, dave_session, DEV_MAX_TTL)


def test_x509_certificate_binds_the_same_key_identity_and_expiry(
        site: LimenCluster, dave_session: Session) -> None:
    dave = dave_session.user
    crt = dave.key_dir / "dave.crt"
    verified = run(["openssl", "verify", "-purpose", "sslclient", "-CAfile",
                    dave.key_dir / "cas" / f"{site.name}.pem", crt], env=clean_env())
    assert verified.stdout.strip() == f"{crt}: OK"
    certificate = x509.load_pem_x509_certificate(crt.read_bytes())
    names = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [n.value for n in names] == ["dave"]
    ssh_cert = inspect_ssh_cert(dave.ssh_cert_path(site.name))
    assert local_time(certificate.not_valid_after_utc.timestamp()) == ssh_cert.valid_to

    public = (dave.key_dir / "dave.pub").read_text()
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert certificate.public_key().public_bytes(*raw) == \
        serialization.load_ssh_public_key(public.encode()).public_bytes(*raw)
    certified = run(["ssh-keygen", "-lf", dave.ssh_cert_path(site.name)], env=clean_env())
    assert certified.stdout.split()[1] == ssh_fingerprint(public.strip())


def assert_lifetime(valid_from: datetime, valid_to: datetime, session: Session,
                    ttl: timedelta) -> None:
    """The certificate expires ``ttl`` after it was issued (during the login) and starts at
    most CLOCK_SKEW earlier; ssh-keygen prints whole seconds."""
    second = timedelta(seconds=1)
    assert local_time(session.started) + ttl - second <= valid_to
    assert valid_to <= local_time(session.finished) + ttl
    assert valid_to - valid_from == ttl + CLOCK_SKEW


def test_lmsh_status_shows_the_identity(site: LimenCluster, dave_session: Session) -> None:
    status = dave_session.user.status()
    assert {k: status[k] for k in ("user", "roles", "logins", "cluster", "proxy", "valid")} == {
        "user": "dave", "roles": ["dev"], "logins": ["dave", "ubuntu"], "cluster": site.name,
        "proxy": site.web, "valid": True}
    expires = datetime.fromisoformat(status["expires"]).timestamp()
    assert dave_session.started + DEV_MAX_TTL.total_seconds() - 1 <= expires
    assert expires <= dave_session.finished + DEV_MAX_TTL.total_seconds()


@pytest.fixture(scope="module")
def people(site: LimenCluster) -> dict[str, LimenUser]:
    """Signed-up dev users, one per test that needs a person of its own (created together)."""
    return {u.name: u for u in site.signed_up_users("tina", "vic", "frank", "lou")}


@pytest.fixture(scope="module")
def tina(people: dict[str, LimenUser]) -> LimenUser:
    """Takes the TTL tests (two logins: the current TOTP step and the next one)."""
    return people["tina"]


@pytest.mark.parametrize(("requested", "granted"), [
    ("1h", timedelta(hours=1)),
    ("48h", DEV_MAX_TTL),  # capped by the dev role's max_session_ttl
])
def test_requested_ttl_is_capped_by_the_roles(site: LimenCluster, tina: LimenUser,
                                              requested: str, granted: timedelta) -> None:
    session = login(tina, ttl=requested)
    cert = inspect_ssh_cert(tina.ssh_cert_path(site.name))
    assert_lifetime(cert.valid_from, cert.valid_to, session, granted)


def test_ssh_agent_gets_the_certificate_and_logout_removes_everything(
        site: LimenCluster, people: dict[str, LimenUser], ssh_agent: SshAgent) -> None:
    frank = people["frank"]
    frank.ssh_auth_sock = ssh_agent.socket

    result = frank.login()

    assert "added to ssh-agent" in result.stdout
    cert = frank.ssh_cert_path(site.name).read_text().split()[:2]
    key = (frank.key_dir / "frank.pub").read_text().split()[:2]
    held = [line.split()[:2] for line in ssh_agent.identities()]
    assert cert in held
    assert all(entry in (cert, key) for entry in held), held

    out = frank.logout()

    assert "Logged out frank" in out.stdout
    assert ssh_agent.identities() == []
    layout = expected_layout(frank, site.name, logged_in=False)
    assert tree_modes(frank.home) == layout | {"known_hosts": 0o600, "profiles/": 0o700}
    status = frank.lmsh("status", check=False)
    assert status.returncode == 1, describe(status)
    assert status.stderr.startswith("error: not logged in")


# -- refusals ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vic(people: dict[str, LimenUser]) -> LimenUser:
    """Takes the wrong-password and wrong-code tests (a few failures: far from the lockout)."""
    return people["vic"]


def assert_refused(result: Any, message: str = DENIED) -> None:
    assert result.returncode == 1, describe(result)
    assert result.stderr.splitlines() == [message], describe(result)
    assert result.stdout == ""


def test_wrong_password_is_refused_and_audited(site: LimenCluster, vic: LimenUser) -> None:
    assert_refused(vic.login(password="not-vics-password-at-all", check=False))
    event = last_event(site, "user.login", "vic")
    assert (event["success"], event["reason"]) == (False, "bad_password")


def test_wrong_one_time_code_is_refused_and_audited(site: LimenCluster, vic: LimenUser) -> None:
    totp, now = pyotp.TOTP(vic.totp_secret or ""), time.time()
    accepted = {totp.at(now + delta) for delta in (-60, -30, 0, 30, 60)}
    wrong = next(c for c in (f"{n:06d}" for n in range(1000)) if c not in accepted)
    assert_refused(vic.login(otp=wrong, check=False))
    event = last_event(site, "user.login", "vic")
    assert (event["success"], event["reason"]) == (False, "bad_otp")


def test_replayed_one_time_code_is_refused_and_audited(site: LimenCluster,
                                                       dave_session: Session) -> None:
    dave = dave_session.user
    dave.login()  # a code used just now: a replay within its window (an older one is just bad)
    assert dave.last_code
    assert_refused(dave.login(otp=dave.last_code, check=False))
    event = last_event(site, "user.login", "dave")
    assert (event["success"], event["reason"]) == (False, "otp_replayed")


def test_unknown_user_gets_the_wrong_password_message(site: LimenCluster,
                                                      dave: LimenUser) -> None:
    # Someone on dave's machine (the CA is pinned there) tries a name that does not exist.
    ghost = LimenUser("ghost", dave.home, site.web)
    assert_refused(ghost.login(otp="123456", check=False))
    event = last_event(site, "user.login", "ghost")
    assert (event["success"], event["reason"]) == (False, "unknown_user")


def test_five_wrong_passwords_lock_the_user(site: LimenCluster,
                                            people: dict[str, LimenUser]) -> None:
    lou = people["lou"]
    # All five at once: every failure must count even when the attempts race.
    with ThreadPoolExecutor(max_workers=5) as pool:
        failures = list(pool.map(
            lambda _: lou.login(password="definitely-not-lous-password", check=False),
            range(5)))
    for failure in failures:
        assert_refused(failure)

    refused = lou.login(check=False)  # the right password and a fresh code

    assert refused.returncode == 1, describe(refused)
    assert len(refused.stderr.splitlines()) == 1
    assert refused.stderr.startswith("error: user lou is locked until")
    events = site.audit("user.login", "user.locked", user="lou")
    logins = [e for e in events if e["event"] == "user.login"]
    assert [e["reason"] for e in logins] == ["bad_password"] * 5 + ["locked"]
    assert not any(e["success"] for e in logins)
    locked = [e for e in events if e["event"] == "user.locked"]
    assert len(locked) == 1
    assert locked[0]["until"] > time.time()


def test_expired_signup_link_is_refused(site: LimenCluster) -> None:
    link = site.add_user("erin", ttl="1s")["url"]
    expiry = time.time() + 1.0  # the server set it before the command returned
    wait_for(lambda: time.time() > expiry, 5.0, "erin's sign-up link to expire")

    erin = site.user("erin")
    result = erin.signup(link, check=False)

    assert result.returncode == 1, describe(result)
    assert len(result.stderr.splitlines()) == 1
    assert "sign-up link has expired" in result.stderr
    assert erin.totp_secret is None
    event = last_event(site, "user.signup")
    assert event["success"] is False


def test_used_signup_link_is_refused(site: LimenCluster, dave: LimenUser) -> None:
    again = site.user("dave-again")
    result = again.signup(dave.signup_link or "", check=False)
    assert result.returncode == 1, describe(result)
    assert len(result.stderr.splitlines()) == 1
    assert "sign-up link was already used" in result.stderr
    assert again.totp_secret is None
    assert last_event(site, "user.signup")["success"] is False


def test_secrets_never_reach_the_audit_log(site: LimenCluster, dave: LimenUser,
                                           vic: LimenUser) -> None:
    wrong = "a-wrong-password-that-must-not-leak"
    assert_refused(vic.login(password=wrong, check=False))
    secrets = [wrong, dave.password, vic.password, dave.totp_secret, vic.totp_secret,
               (dave.signup_link or "").split("/")[-1].split("?")[0]]
    log = audit_log_bytes(site)
    assert b"user.login" in log
    for secret in secrets:
        assert secret
        assert secret.encode() not in log, f"a secret is in the audit log: {secret[:4]}..."


# -- join tokens ---------------------------------------------------------------------------


def test_node_token_joins_through_the_proxy(site: LimenCluster, ca: dict[str, str],
                                            tmp_path: Path) -> None:
    token = site.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
    assert token["type"] == "node"
    assert token["ca_pin"] == ca["tls"]
    expires = datetime.fromisoformat(token["expires"].replace("Z", "+00:00")).timestamp()
    assert 0 < expires - time.time() <= 300

    creds = asyncio.run(join_via_proxy(site.web, token["token"], token["ca_pin"], role="node",
                                       host_id="", hostname="node-one"))

    (tmp_path / "host-cert.pub").write_bytes(creds.ssh_cert)
    cert = inspect_ssh_cert(tmp_path / "host-cert.pub")
    assert cert.kind == "host"
    assert cert.signing_ca == ca["host"]
    assert {creds.host_id, "node-one", f"node-one.{site.name}"} <= set(cert.principals)
    joined = [e for e in site.audit("join") if e.get("hostname") == "node-one"]
    assert [(e["success"], e["token_id"]) for e in joined] == [(True, token["id"])]
    assert token["token"].encode() not in audit_log_bytes(site)


def test_bad_join_token_is_denied_and_audited(site: LimenCluster, ca: dict[str, str]) -> None:
    with pytest.raises(AccessDenied):
        asyncio.run(join_via_proxy(site.web, "not-a-real-token", ca["tls"], role="node",
                                   host_id="intruder-id", hostname="intruder"))
    refused = [e for e in site.audit("join") if e.get("hostname") == "intruder"]
    assert len(refused) == 1
    assert refused[0]["success"] is False
