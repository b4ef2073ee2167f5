"""SSH certificates from limen.ca.ssh_certs, checked by real OpenSSH tools and asyncssh.

Interop: ``ssh-keygen -L`` reads an issued certificate; the real ``ssh`` client presents a
Limen user certificate to an asyncssh server trusting the user CA, and accepts an asyncssh
server's Limen host certificate through an ``@cert-authority`` known_hosts line. Then every
rejection rule of Limen's own verifiers, with injected clocks (no sleeping).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import struct
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from cryptography.hazmat.primitives.serialization import ssh as crypto_ssh

from limen.ca.authority import CertAuthority, CertAuthorityType, ssh_trust_map
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import (
    KeyType,
    PrivateKey,
    generate_private_key,
    private_key_to_openssh,
    public_key_to_openssh,
    ssh_fingerprint,
    ssh_public_key_blob,
)
from limen.ca.ssh_certs import (
    IDENTITY_EXTENSION,
    NO_LOGIN_PRINCIPAL,
    encode_certificate,
    parse_ssh_cert,
    sign_host_cert,
    sign_user_cert,
    verify_ssh_host_cert,
    verify_ssh_user_cert,
)
from limen.errors import AccessDenied, BadParameter

SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
HOUR = timedelta(hours=1)
DEADLINE = 30.0

ALICE = Identity(
    username="alice", cluster="root", roles=("dev", "ops"),
    traits={"logins": ("alice",), "team": ("core",)}, logins=("alice", "ubuntu"),
    kubernetes_groups=("viewers",), db_users=("alice",),
)


@pytest.fixture(scope="module")
def user_ca() -> CertAuthority:
    return CertAuthority.generate("root", CertAuthorityType.USER)


@pytest.fixture(scope="module")
def host_ca() -> CertAuthority:
    return CertAuthority.generate("root", CertAuthorityType.HOST)


def _trust(ca: CertAuthority) -> dict[str, tuple]:
    return ssh_trust_map([ca], ca.type)


@dataclass
class KeyFiles:
    key: PrivateKey
    key_path: Path
    cert_path: Path


def _write_key(directory: Path, name: str, key: PrivateKey, cert: bytes) -> KeyFiles:
    key_path = directory / name
    key_path.write_text(private_key_to_openssh(key))
    key_path.chmod(0o600)
    cert_path = directory / f"{name}-cert.pub"
    cert_path.write_bytes(cert + b"\n")
    return KeyFiles(key, key_path, cert_path)


# ---------------------------------------------------------------------- format, ssh-keygen


def test_ssh_keygen_reads_user_certificate(user_ca: CertAuthority, tmp_path: Path) -> None:
    key = generate_private_key()
    cert = sign_user_cert(user_ca, key.public_key(), ALICE, 8 * HOUR, now=NOW)
    files = _write_key(tmp_path, "id", key, cert)
    out = subprocess.run([SSH_KEYGEN, "-L", "-f", str(files.cert_path)], check=True,
                         capture_output=True, text=True, env={**os.environ, "TZ": "UTC"}).stdout
    assert "ssh-ed25519-cert-v01@openssh.com user certificate" in out
    assert 'Key ID: "user:alice"' in out
    assert f"Signing CA: ED25519 {user_ca.fingerprint}" in out
    assert "Valid: from 2030-01-02T03:03:05 to 2030-01-02T11:04:05" in out
    principals = out.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == ["alice", "ubuntu"]
    assert "Critical Options: (none)" in out
    extensions = [line.split()[0] for line in out.split("Extensions:")[1].splitlines()
                  if line.strip()]
    assert extensions == [IDENTITY_EXTENSION, "permit-port-forwarding", "permit-pty"]
    # the identity JSON is what ssh-keygen dumps (hex) after the extension name
    assert ALICE.to_json().hex() in out


def test_extension_flags_follow_options(user_ca: CertAuthority) -> None:
    key = generate_private_key().public_key()
    cert = parse_ssh_cert(sign_user_cert(
        user_ca, key, ALICE, HOUR, permit_pty=False, permit_port_forwarding=False,
        permit_agent_forwarding=True, now=NOW))
    assert set(cert.extensions) == {IDENTITY_EXTENSION.encode(), b"permit-agent-forwarding"}
    assert cert.extensions[IDENTITY_EXTENSION.encode()] == ALICE.to_json()
    assert cert.critical_options == {}


def test_certificate_fields_and_size(user_ca: CertAuthority) -> None:
    key = generate_private_key().public_key()
    line = sign_user_cert(user_ca, key, ALICE, 8 * HOUR, now=NOW)
    cert = parse_ssh_cert(line)
    assert cert.type is crypto_ssh.SSHCertificateType.USER
    assert cert.public_key() == key
    assert cert.signature_key() == user_ca.active.public_key
    assert cert.valid_after == int(NOW.timestamp()) - 60
    assert cert.valid_before == int((NOW + 8 * HOUR).timestamp())
    serials = {parse_ssh_cert(sign_user_cert(user_ca, key, ALICE, HOUR)).serial
               for _ in range(20)}
    assert len(serials) == 20
    assert max(serials) < 2**64
    assert len(line) < 1024, f"user certificate grew to {len(line)} bytes"


def test_user_without_logins_gets_placeholder_principal(user_ca: CertAuthority) -> None:
    kube_only = Identity("bob", "root", roles=("kube",), kubernetes_groups=("dev",))
    line = sign_user_cert(user_ca, generate_private_key().public_key(), kube_only, HOUR,
                          now=NOW)
    assert parse_ssh_cert(line).valid_principals == [NO_LOGIN_PRINCIPAL.encode()]
    identity = verify_ssh_user_cert(line, _trust(user_ca), NOW)
    assert identity.logins == ()
    with pytest.raises(AccessDenied, match="not valid for principal 'root'"):
        verify_ssh_user_cert(line, _trust(user_ca), NOW, principal="root")


def test_encoder_matches_cryptography_builder(user_ca: CertAuthority,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Same inputs and nonce: Limen's encoder and SSHCertificateBuilder emit equal bytes."""
    subject = generate_private_key().public_key()
    nonce = bytes(range(32))
    extensions = [(b"permit-pty", b""), (IDENTITY_EXTENSION.encode(), ALICE.to_json())]
    ours = encode_certificate(
        user_ca.active, user_ca.signer, ssh_public_key_blob(subject), 1, nonce=nonce,
        serial=12345, key_id=b"user:alice", principals=[b"alice", b"ubuntu"],
        valid_after=100, valid_before=200, extensions=extensions)
    monkeypatch.setattr(crypto_ssh.os, "urandom", lambda n: nonce[:n])
    builder = (
        crypto_ssh.SSHCertificateBuilder().public_key(subject).serial(12345)
        .type(crypto_ssh.SSHCertificateType.USER).key_id(b"user:alice")
        .valid_principals([b"alice", b"ubuntu"]).valid_after(100).valid_before(200)
    )
    for name, value in extensions:
        builder = builder.add_extension(name, value)
    assert ours == builder.sign(user_ca.signer).public_bytes()


@pytest.mark.parametrize("ca_key", [KeyType.ED25519, KeyType.ECDSA_P256])
@pytest.mark.parametrize("subject_key", [KeyType.ED25519, KeyType.ECDSA_P256])
def test_key_type_combinations_verify(ca_key: KeyType, subject_key: KeyType) -> None:
    ca = CertAuthority.generate("root", CertAuthorityType.USER, ca_key)
    key = generate_private_key(subject_key).public_key()
    line = sign_user_cert(ca, public_key_to_openssh(key), ALICE, HOUR, now=NOW)
    assert parse_ssh_cert(line).public_key() == key
    assert verify_ssh_user_cert(line, _trust(ca), NOW).logins == ("alice", "ubuntu")


def test_host_certificate_contents(host_ca: CertAuthority) -> None:
    key = generate_private_key().public_key()
    line = sign_host_cert(host_ca, key, "h-1234", "web1", ["10.0.0.5", "web1"], HOUR,
                          SystemRole.NODE, now=NOW)
    cert = parse_ssh_cert(line)
    assert cert.type is crypto_ssh.SSHCertificateType.HOST
    assert cert.key_id == b"host:h-1234"
    assert cert.valid_principals == [b"h-1234", b"h-1234.root", b"web1", b"web1.root",
                                     b"10.0.0.5"]
    identity = verify_ssh_host_cert(line, _trust(host_ca), NOW, principal="10.0.0.5")
    assert (identity.host_id, identity.hostname, identity.system_role) == (
        "h-1234", "web1", SystemRole.NODE)
    assert identity.username == "h-1234"
    assert identity.cluster == "root"


def test_signing_refuses_wrong_ca_or_cluster(user_ca: CertAuthority,
                                             host_ca: CertAuthority) -> None:
    key = generate_private_key().public_key()
    with pytest.raises(BadParameter, match="user CA is needed"):
        sign_user_cert(host_ca, key, ALICE, HOUR)
    with pytest.raises(BadParameter, match="cluster 'leaf'"):
        sign_user_cert(user_ca, key, Identity("alice", "leaf", logins=("a",)), HOUR)
    with pytest.raises(BadParameter, match="TTL"):
        sign_user_cert(user_ca, key, ALICE, timedelta(0))
    with pytest.raises(BadParameter, match="public-only"):
        sign_user_cert(user_ca.public_only(), key, ALICE, HOUR)


# ---------------------------------------------------------------------- Limen's verifier


def test_verify_round_trip(user_ca: CertAuthority) -> None:
    line = sign_user_cert(user_ca, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    identity = verify_ssh_user_cert(line, _trust(user_ca), NOW + 30 * timedelta(minutes=1),
                                    principal="ubuntu")
    assert identity.with_validity(NOW, NOW) == ALICE.with_validity(NOW, NOW)
    assert identity.not_before == NOW - timedelta(minutes=1)
    assert identity.not_after == NOW + HOUR


def test_rejects_certificate_of_another_ca(user_ca: CertAuthority) -> None:
    other = CertAuthority.generate("root", CertAuthorityType.USER)
    line = sign_user_cert(other, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    with pytest.raises(AccessDenied, match="signed by an untrusted CA"):
        verify_ssh_user_cert(line, _trust(user_ca), NOW)


def test_rejects_expired_and_not_yet_valid(user_ca: CertAuthority) -> None:
    line = sign_user_cert(user_ca, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    verify_ssh_user_cert(line, _trust(user_ca), NOW + HOUR - timedelta(seconds=1))
    with pytest.raises(AccessDenied, match="expired"):
        verify_ssh_user_cert(line, _trust(user_ca), NOW + HOUR)
    verify_ssh_user_cert(line, _trust(user_ca), NOW - timedelta(seconds=60))
    with pytest.raises(AccessDenied, match="not valid before"):
        verify_ssh_user_cert(line, _trust(user_ca), NOW - timedelta(seconds=61))


def test_rejects_host_certificate_as_user_and_back(user_ca: CertAuthority,
                                                   host_ca: CertAuthority) -> None:
    key = generate_private_key().public_key()
    host = sign_host_cert(host_ca, key, "h-1", "web1", [], HOUR, now=NOW)
    # even when the verifier (wrongly) trusts the host CA as a user CA, the type decides
    with pytest.raises(AccessDenied, match="host certificate was presented where a user"):
        verify_ssh_user_cert(host, _trust(host_ca), NOW)
    user = sign_user_cert(user_ca, key, ALICE, HOUR, now=NOW)
    with pytest.raises(AccessDenied, match="user certificate was presented where a host"):
        verify_ssh_host_cert(user, _trust(user_ca), NOW)


def test_rejects_certificate_claiming_another_cluster() -> None:
    ca_a = CertAuthority.generate("a", CertAuthorityType.USER)
    ca_b = CertAuthority.generate("b", CertAuthorityType.USER)
    # CA "a"'s key signing an identity of cluster "b": a forged or misissued certificate
    impostor = CertAuthority("b", CertAuthorityType.USER, ca_a.active)
    line = sign_user_cert(impostor, generate_private_key().public_key(),
                          Identity("alice", "b", logins=("alice",)), HOUR, now=NOW)
    trusted = ssh_trust_map([ca_a, ca_b], CertAuthorityType.USER)
    with pytest.raises(AccessDenied, match="claims cluster 'b' but is signed by the user CA "
                                           "of 'a'"):
        verify_ssh_user_cert(line, trusted, NOW)
    # the same certificate is fine when it claims the cluster whose CA signed it
    good = sign_user_cert(ca_a, generate_private_key().public_key(),
                          Identity("alice", "a", logins=("alice",)), HOUR, now=NOW)
    assert verify_ssh_user_cert(good, trusted, NOW).cluster == "a"


def test_leaf_trusting_only_itself_rejects_root_certificate() -> None:
    root = CertAuthority.generate("root", CertAuthorityType.USER)
    leaf = CertAuthority.generate("leaf", CertAuthorityType.USER)
    line = sign_user_cert(root, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    with pytest.raises(AccessDenied, match="untrusted CA"):
        verify_ssh_user_cert(line, _trust(leaf), NOW)
    # once the leaf trusts the root's user CA (trusted cluster), root users are accepted
    both = ssh_trust_map([leaf, root.public_only()], CertAuthorityType.USER)
    assert verify_ssh_user_cert(line, both, NOW).cluster == "root"


@pytest.mark.parametrize("where", ["principal", "validity", "identity", "signature"])
def test_rejects_tampered_bytes(user_ca: CertAuthority, where: str) -> None:
    line = sign_user_cert(user_ca, generate_private_key().public_key(), ALICE, HOUR, now=NOW)
    prefix, b64 = line.split(b" ")
    body = bytearray(base64.b64decode(b64))
    if where == "principal":
        at = body.index(b"ubuntu")
        body[at:at + 6] = b"rootxx"
    elif where == "validity":
        at = body.index(struct.pack(">Q", int(NOW.timestamp()) - 60))
        body[at:at + 8] = struct.pack(">Q", int(NOW.timestamp()) - 86400)
    elif where == "identity":
        at = body.index(b'"dev"')
        body[at:at + 5] = b'"adm"'
    else:
        body[-1] ^= 0x01
    forged = prefix + b" " + base64.b64encode(bytes(body))
    with pytest.raises(AccessDenied, match="signature is invalid"):
        verify_ssh_user_cert(forged, _trust(user_ca), NOW)


def test_rejects_public_key_garbage_and_missing_identity(user_ca: CertAuthority) -> None:
    key = generate_private_key().public_key()
    with pytest.raises(AccessDenied, match="public key was presented"):
        verify_ssh_user_cert(public_key_to_openssh(key), _trust(user_ca), NOW)
    with pytest.raises(AccessDenied, match="malformed"):
        verify_ssh_user_cert(b"ssh-ed25519-cert-v01@openssh.com AAAAnope", _trust(user_ca), NOW)
    bare = encode_certificate(
        user_ca.active, user_ca.signer, ssh_public_key_blob(key), 1, nonce=os.urandom(32),
        serial=1, key_id=b"user:alice", principals=[b"alice"],
        valid_after=int(NOW.timestamp()), valid_before=int((NOW + HOUR).timestamp()),
        extensions=[(b"permit-pty", b"")])
    with pytest.raises(AccessDenied, match=f"no {IDENTITY_EXTENSION} extension"):
        verify_ssh_user_cert(bare, _trust(user_ca), NOW)


def test_rotation_keeps_old_certificates_valid(user_ca: CertAuthority) -> None:
    key = generate_private_key().public_key()
    before = sign_user_cert(user_ca, key, ALICE, HOUR, now=NOW)
    rotated = user_ca.rotate()
    after = sign_user_cert(rotated, key, ALICE, HOUR, now=NOW)
    trust = _trust(rotated.public_only())
    assert verify_ssh_user_cert(before, trust, NOW).username == "alice"
    assert verify_ssh_user_cert(after, trust, NOW).username == "alice"
    with pytest.raises(AccessDenied, match="untrusted CA"):
        verify_ssh_user_cert(before, _trust(rotated.finish_rotation()), NOW)


# ---------------------------------------------------------------------- real ssh <-> asyncssh


@dataclass
class SSHServer:
    port: int
    logins: list[str]


def _ssh_args(port: int, files: KeyFiles, known_hosts: str, strict: str) -> list[str]:
    return [
        SSH, "-F", "/dev/null", "-o", f"StrictHostKeyChecking={strict}",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
        "-o", "PreferredAuthentications=publickey", "-o", "ConnectTimeout=10",
        "-i", str(files.key_path), "-o", f"CertificateFile={files.cert_path}",
        "-p", str(port), "alice@127.0.0.1", "true",
    ]


async def _run(args: list[str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode is not None
    return proc.returncode, err.decode(errors="replace")


@pytest.fixture
async def asyncssh_server(user_ca: CertAuthority, host_ca: CertAuthority
                          ) -> AsyncIterator[SSHServer]:
    """An asyncssh server trusting the user CA, presenting a Limen host certificate."""
    host_key = generate_private_key()
    host_cert = sign_host_cert(host_ca, host_key.public_key(), "h-1", "web1", ["127.0.0.1"],
                               HOUR)
    logins: list[str] = []

    async def handle(process: asyncssh.SSHServerProcess) -> None:
        logins.append(process.get_extra_info("username"))
        process.exit(0)

    authorized = asyncssh.import_authorized_keys(
        "".join(f"cert-authority {line}\n" for line in user_ca.ssh_public_keys()))
    server = await asyncssh.listen(
        "127.0.0.1", 0, process_factory=handle, authorized_client_keys=authorized,
        server_host_keys=[(asyncssh.import_private_key(private_key_to_openssh(host_key)),
                           asyncssh.import_certificate(host_cert))])
    try:
        yield SSHServer(server.sockets[0].getsockname()[1], logins)
    finally:
        server.close()
        await server.wait_closed()


async def test_openssh_client_presents_user_cert_to_asyncssh(
    asyncssh_server: SSHServer, user_ca: CertAuthority, tmp_path: Path,
) -> None:
    key = generate_private_key()
    files = _write_key(tmp_path, "id", key, sign_user_cert(user_ca, key.public_key(),
                                                          ALICE, HOUR))
    code, err = await _run(_ssh_args(asyncssh_server.port, files, "/dev/null", "no"))
    assert code == 0, err
    assert asyncssh_server.logins == ["alice"]


async def test_openssh_client_cert_from_other_ca_is_refused(
    asyncssh_server: SSHServer, tmp_path: Path,
) -> None:
    other = CertAuthority.generate("root", CertAuthorityType.USER)
    key = generate_private_key()
    files = _write_key(tmp_path, "id", key, sign_user_cert(other, key.public_key(),
                                                          ALICE, HOUR))
    code, err = await _run(_ssh_args(asyncssh_server.port, files, "/dev/null", "no"))
    assert code == 255
    assert "Permission denied" in err
    assert asyncssh_server.logins == []


async def test_asyncssh_client_presents_user_cert(
    asyncssh_server: SSHServer, user_ca: CertAuthority,
) -> None:
    key = generate_private_key()
    cert = sign_user_cert(user_ca, key.public_key(), ALICE, HOUR)
    client_key = asyncssh.import_private_key(private_key_to_openssh(key))
    async with asyncssh.connect(
        "127.0.0.1", asyncssh_server.port, username="ubuntu", known_hosts=None,
        client_keys=[(client_key, asyncssh.import_certificate(cert))], agent_path=None,
        preferred_auth="publickey",
    ) as conn:
        result = await asyncio.wait_for(conn.run("true"), DEADLINE)
    assert result.exit_status == 0
    assert asyncssh_server.logins == ["ubuntu"]


async def test_openssh_accepts_limen_host_cert_via_cert_authority(
    asyncssh_server: SSHServer, user_ca: CertAuthority, host_ca: CertAuthority,
    tmp_path: Path,
) -> None:
    key = generate_private_key()
    files = _write_key(tmp_path, "id", key, sign_user_cert(user_ca, key.public_key(),
                                                          ALICE, HOUR))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"@cert-authority * {host_ca.ssh_public_keys()[0]}\n")
    code, err = await _run(_ssh_args(asyncssh_server.port, files, str(known_hosts), "yes"))
    assert code == 0, err

    # a different host CA in known_hosts: strict checking refuses the server
    wrong = CertAuthority.generate("root", CertAuthorityType.HOST)
    known_hosts.write_text(f"@cert-authority * {wrong.ssh_public_keys()[0]}\n")
    code, err = await _run(_ssh_args(asyncssh_server.port, files, str(known_hosts), "yes"))
    assert code == 255
    assert "Host key verification failed" in err


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    for key_type in KeyType:
        key = generate_private_key(key_type).public_key()
        path = tmp_path / f"{key_type.value}.pub"
        path.write_text(public_key_to_openssh(key, "c") + "\n")
        out = subprocess.run([SSH_KEYGEN, "-l", "-f", str(path)], check=True,
                             capture_output=True, text=True).stdout
        assert out.split()[1] == ssh_fingerprint(key)
