"""Node agent parts without a network: asyncssh options, login environment, accounts,
certificate check, access policy, PTY modes, scp command parsing."""

from __future__ import annotations

import base64
import os
import pwd
import termios
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from limen.agents.node import (
    NodeServerConfig,
    SessionEnv,
    StoreAccessPolicy,
    UnixUser,
    authenticate_key,
    find_sftp_server,
    login_environment,
    lookup_user,
    server_options,
)
from limen.agents.node.certauth import is_certificate, key_algorithm
from limen.agents.node.config import DEFAULT_CIPHERS, MAX_PACKET_SIZE
from limen.agents.node.ptymodes import updated_attributes
from limen.agents.node.session_process import exit_signal_name
from limen.agents.node.transfers import scp_direction
from limen.agents.node.unixuser import DEFAULT_PATH, ROOT_PATH, check_can_run_as, is_accepted_env
from limen.api.resources import Kind, Resource
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType, ssh_trust_map
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.ssh_certs import sign_host_cert, sign_user_cert
from limen.errors import AccessDenied, BadParameter, NotFound
from limen.services.resource_store import ResourceStore

USER_CA = CertAuthority.generate("main", CertAuthorityType.USER)
HOST_CA = CertAuthority.generate("main", CertAuthorityType.HOST)
TRUST = ssh_trust_map([USER_CA], CertAuthorityType.USER)


def _blob(line: bytes | str) -> bytes:
    text = line.decode() if isinstance(line, bytes) else line
    return base64.b64decode(text.split()[1])


def _credentials(with_cert: bool = True) -> HostCredentials:
    key = generate_private_key()
    cert = sign_host_cert(HOST_CA, key.public_key(), "h1", "web1", [], timedelta(hours=1))
    return HostCredentials("main", "h1", "node", private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=b"", tls_ca_pem=b"", ssh_cert=cert if with_cert else b"",
                           hostname="web1")


# ------------------------------------------------------------------------ options


async def test_server_options_are_what_asyncssh_accepts() -> None:
    config = NodeServerConfig(_credentials(), {"env": "dev"}, Path("/tmp/x"),
                              login_timeout=12, keepalive_interval=7)
    options = server_options(config)
    assert options["encryption_algs"] == ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                          "chacha20-poly1305@openssh.com"]
    assert options["compression_algs"] == ["none"]
    assert "curve25519-sha256" in options["kex_algs"]
    assert all(alg.endswith("-etm@openssh.com") for alg in options["mac_algs"])
    assert options["max_pktsize"] == MAX_PACKET_SIZE == 32768
    for off in ("password_auth", "kbdint_auth", "host_based_auth", "gss_auth", "allow_scp",
                "line_editor", "x11_forwarding"):
        assert options[off] is False, off
    assert options["encoding"] is None
    assert options["sftp_factory"] is None
    built = await asyncssh.SSHServerConnectionOptions.construct(**options)
    assert [a.decode() for a in built.encryption_algs] == list(DEFAULT_CIPHERS)
    assert built.login_timeout == 12
    assert built.keepalive_interval == 7
    # the host certificate is offered first (clients with @cert-authority lines verify it)
    assert next(iter(built.server_host_keys)) == b"ssh-ed25519-cert-v01@openssh.com"


def test_server_options_without_a_host_certificate_use_the_plain_key() -> None:
    config = NodeServerConfig(_credentials(with_cert=False))
    (key,) = server_options(config)["server_host_keys"]
    assert isinstance(key, asyncssh.SSHKey)


def test_config_refuses_nonsense() -> None:
    with pytest.raises(BadParameter):
        NodeServerConfig(_credentials(), login_timeout=0)
    bad = HostCredentials("main", "h1", "node", private_key_pem=b"junk", tls_cert_pem=b"",
                          tls_ca_pem=b"")
    with pytest.raises(BadParameter, match="host key"):
        server_options(NodeServerConfig(bad))


def test_config_paths_and_names() -> None:
    config = NodeServerConfig(_credentials(), data_dir=Path("/d"))
    assert config.sessions_dir == Path("/d/log/sessions")
    assert (config.cluster, config.host_id, config.hostname) == ("main", "h1", "web1")


# ------------------------------------------------------------------------ environment

ALICE = UnixUser("alice", 1000, 1000, "/home/alice", "/bin/bash")
INFO = SessionEnv("sid-1", "alice@example.com", "main", "h1", ("10.0.0.5", 51000),
                  ("10.0.0.1", 3022), term="xterm-256color", tty="/dev/pts/3",
                  auth_sock="/tmp/a/agent")


def test_login_environment_has_the_login_variables() -> None:
    env = login_environment(ALICE, INFO, {"LANG": "de_DE.UTF-8", "LC_ALL": "C",
                                          "LD_PRELOAD": "/evil.so", "PATH": "/evil",
                                          "HOME": "/evil", "LC_BAD-NAME": "x"})
    assert env == {
        "HOME": "/home/alice", "USER": "alice", "LOGNAME": "alice", "SHELL": "/bin/bash",
        "PATH": DEFAULT_PATH, "MAIL": "/var/mail/alice", "TERM": "xterm-256color",
        "LANG": "de_DE.UTF-8", "LC_ALL": "C",
        "SSH_CLIENT": "10.0.0.5 51000 3022",
        "SSH_CONNECTION": "10.0.0.5 51000 10.0.0.1 3022",
        "SSH_TTY": "/dev/pts/3", "SSH_AUTH_SOCK": "/tmp/a/agent",
        "SSH_SESSION_ID": "sid-1", "SSH_LIMEN_USER": "alice@example.com",
        "SSH_LIMEN_CLUSTER_NAME": "main", "SSH_LIMEN_HOST_ID": "h1",
    }


def test_root_gets_the_root_path_and_no_optional_variables() -> None:
    root = UnixUser("root", 0, 0, "/root", "/bin/sh")
    env = login_environment(root, SessionEnv("s", "u", "c", "h", ("::1", 1), ("::1", 2)))
    assert env["PATH"] == ROOT_PATH
    assert not {"TERM", "SSH_TTY", "SSH_AUTH_SOCK"} & env.keys()


@pytest.mark.parametrize(("name", "accepted"), [
    ("LANG", True), ("LC_ALL", True), ("LC_MESSAGES", True), ("COLORTERM", True),
    ("TZ", True), ("LD_PRELOAD", False), ("PATH", False), ("LC_", False), ("BASH_ENV", False),
    ("LC_A;B", False),
])
def test_accepted_client_variables(name: str, accepted: bool) -> None:
    assert is_accepted_env(name) is accepted


def test_lookup_user_and_missing_accounts() -> None:
    me = pwd.getpwuid(os.getuid())
    user = lookup_user(me.pw_name)
    assert (user.uid, user.gid, user.home) == (me.pw_uid, me.pw_gid, me.pw_dir)
    assert user.gid in user.groups
    with pytest.raises(NotFound, match="no Unix user"):
        lookup_user("no-such-user-limen")


def test_a_non_root_agent_runs_sessions_only_as_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    check_can_run_as(UnixUser("me", 4242, 4242, "/", "/bin/sh"))
    with pytest.raises(AccessDenied, match="not root: it can only start sessions as"):
        check_can_run_as(ALICE)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    check_can_run_as(ALICE)


# ------------------------------------------------------------------------ certificates


def _user_cert(**kwargs: object) -> tuple[bytes, Identity]:
    identity = Identity("alice", "main", roles=("dev",), logins=("alice", "ops"))
    key = generate_private_key()
    cert = sign_user_cert(USER_CA, key.public_key(), identity, timedelta(hours=1),
                          **kwargs)  # type: ignore[arg-type]
    return cert, identity


def test_a_valid_certificate_gives_the_identity_and_extensions() -> None:
    cert, identity = _user_cert(permit_agent_forwarding=True)
    verified = authenticate_key(_blob(cert), "ops", TRUST)
    assert verified.identity.username == "alice"
    assert verified.identity.roles == identity.roles
    assert verified.permit_agent_forwarding
    assert verified.permit_port_forwarding
    assert verified.permit_pty
    assert verified.key_id == "user:alice"
    assert verified.ca_blob == asyncssh.import_public_key(
        USER_CA.ssh_public_keys()[0]).public_data


@pytest.mark.parametrize(("make", "reason"), [
    (lambda: _blob(_user_cert()[0]), "principal"),
    (lambda: _blob(public_key_to_openssh(generate_private_key().public_key())),
     "plain public key"),
    (lambda: _blob(sign_user_cert(CertAuthority.generate("main", CertAuthorityType.USER),
                                  generate_private_key().public_key(),
                                  Identity("alice", "main", logins=("root",)),
                                  timedelta(hours=1))), "untrusted CA"),
    (lambda: _blob(sign_user_cert(USER_CA, generate_private_key().public_key(),
                                  Identity("alice", "main", logins=("root",)),
                                  timedelta(minutes=5),
                                  now=datetime.now(UTC) - timedelta(hours=1))), "expired"),
    (lambda: _blob(sign_host_cert(HOST_CA, generate_private_key().public_key(), "h", "h",
                                  ["root"], timedelta(hours=1))), "host certificate"),
])
def test_refusals_carry_the_reason(make: object, reason: str) -> None:
    with pytest.raises(AccessDenied, match=reason):
        authenticate_key(make(), "root", TRUST)  # type: ignore[operator]


def test_certificates_of_limen_processes_cannot_log_in() -> None:
    identity = Identity("h1", "main", logins=("root",), system_role=SystemRole.NODE,
                        host_id="h1")
    cert = sign_user_cert(USER_CA, generate_private_key().public_key(), identity,
                          timedelta(hours=1))
    with pytest.raises(AccessDenied, match="Limen process"):
        authenticate_key(_blob(cert), "root", TRUST)


@given(st.binary(max_size=300))
def test_garbage_key_blobs_are_refused_never_crash(data: bytes) -> None:
    with pytest.raises(AccessDenied):
        authenticate_key(data, "root", TRUST)
    assert is_certificate(data) in (True, False)


def test_key_algorithm_bounds() -> None:
    assert key_algorithm(b"\x00\x00\x00\x03abcrest") == b"abc"
    for bad in (b"", b"\x00\x00", b"\x00\x00\x00\x09abc", b"\x00\x00\x00\x00"):
        with pytest.raises(AccessDenied):
            key_algorithm(bad)


# ------------------------------------------------------------------------ access policy


async def test_store_policy_checks_roles_and_sees_changes() -> None:
    store = ResourceStore(MemoryBackend())
    await store.put(Resource(Kind.ROLE, "dev", spec={
        "allow": {"logins": ["{{internal.logins}}"], "node_labels": {"env": "dev"}},
        "options": {"client_idle_timeout": "5m", "port_forwarding": False}}))
    policy = StoreAccessPolicy(store, {"env": "dev"}, cluster="main")
    alice = Identity("alice", "main", roles=("dev", "missing"),
                     traits={"logins": ("alice",)}, logins=("alice",))
    assert (await policy.check_ssh(alice, "alice")).allowed
    denied = await policy.check_ssh(alice, "root")
    assert not denied.allowed
    options = await policy.session_options(alice)
    assert options.client_idle_timeout == timedelta(minutes=5)
    assert options.port_forwarding is False
    first = await policy.role_set(alice)
    assert await policy.role_set(alice) is first  # cached while the roles are unchanged
    await store.put(Resource(Kind.ROLE, "dev", spec={
        "allow": {"logins": ["root"], "node_labels": {"env": "dev"}}}))
    assert (await policy.check_ssh(alice, "root")).allowed  # the new revision applies
    await store.backend.close()


async def test_store_policy_refuses_unmapped_foreign_identities() -> None:
    store = ResourceStore(MemoryBackend())
    await store.put(Resource(Kind.ROLE, "dev", spec={
        "allow": {"logins": ["root"], "node_labels": {"*": "*"}}}))
    foreign = Identity("bob", "other", roles=("dev",), logins=("root",))
    policy = StoreAccessPolicy(store, {}, cluster="main")
    decision = await policy.check_ssh(foreign, "root")
    assert not decision.allowed
    assert "not mapped" in decision.reason
    mapped = StoreAccessPolicy(store, {}, cluster="main", map_roles=lambda i: ["dev"])
    assert (await mapped.check_ssh(foreign, "root")).allowed
    await store.backend.close()


# ------------------------------------------------------------------------ small pieces


def test_terminal_modes_map_to_termios() -> None:
    cc = [b"\x00"] * 32
    attrs = [0, termios.OPOST, termios.CS7, termios.ECHO | termios.ICANON, 0, 0, cc]
    new = updated_attributes(attrs, {3: 127, 53: 0, 36: 1, 91: 1, 50: 1, 255: 1, 1: 255})
    assert new[6][termios.VERASE] == b"\x7f"
    assert new[6][termios.VINTR] == b"\x00"  # 255 disables the character
    assert not new[3] & termios.ECHO
    assert new[3] & termios.ISIG
    assert new[3] & termios.ICANON
    assert new[0] & termios.ICRNL
    assert new[2] & termios.CSIZE == termios.CS8
    assert attrs[6] is cc
    assert cc[termios.VERASE] == b"\x00"


@pytest.mark.parametrize(("command", "expected"), [
    ("scp -t /tmp/x", ("upload", "/tmp/x")),
    ("scp -v -d -t -- dir", ("upload", "dir")),
    ("/usr/bin/scp -f 'my file'", ("download", "my file")),
    ("scp -pf x", ("download", "x")),
    ("ls -t", None),
    ("scp", None),
    ("echo 'unbalanced", None),
])
def test_scp_commands(command: str, expected: tuple[str, str] | None) -> None:
    assert scp_direction(command) == expected


def test_exit_signal_names() -> None:
    assert exit_signal_name(-15) == "TERM"
    assert exit_signal_name(-9) == "KILL"
    assert exit_signal_name(-200) == "KILL"


def test_find_sftp_server(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    script = tmp_path / "sftp-server"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert find_sftp_server([str(missing), str(script)]) == str(script)
    assert find_sftp_server([str(missing)]) is None
