"""Micro-benchmark of the CA's signing paths, single process (not run by the test suite).

Prints raw Ed25519 / P-256 signatures per second, SSH user certificates per second (Limen's
encoder and, for comparison, cryptography's SSHCertificateBuilder), X.509 client certificates
per second, and the verification rates. Targets on a 2-core machine: >= 10,000 SSH user
certificates/s and >= 5,000 X.509 client certificates/s.

    .venv/bin/python bench/bench_signing_raw.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from datetime import timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import ssh

from limen.ca.authority import CertAuthority, CertAuthorityType, ssh_trust_map, tls_trust_map
from limen.ca.identity import Identity
from limen.ca.keys import KeyType, generate_private_key
from limen.ca.ssh_certs import IDENTITY_EXTENSION, sign_user_cert, verify_ssh_user_cert
from limen.ca.x509_certs import sign_client_cert, verify_client_cert

IDENTITY = Identity(
    username="alice", cluster="root", roles=("dev", "ops"),
    traits={"logins": ("alice",), "team": ("core",)}, logins=("alice", "ubuntu"),
    kubernetes_groups=("viewers",), db_users=("alice",),
)
TTL = timedelta(hours=8)


def rate(fn: Callable[[], object], seconds: float) -> float:
    for _ in range(50):  # warm up
        fn()
    count, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            fn()
        count += 100
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    seconds = parser.parse_args().seconds

    user_ca = CertAuthority.generate("root", CertAuthorityType.USER)
    tls_ca = CertAuthority.generate("root", CertAuthorityType.TLS)
    tls_ed = CertAuthority.generate("root", CertAuthorityType.TLS, KeyType.ED25519)
    subject = generate_private_key().public_key()
    ed_key = user_ca.signer
    p256 = generate_private_key(KeyType.ECDSA_P256)
    assert isinstance(p256, ec.EllipticCurvePrivateKey)
    message = os.urandom(400)
    ssh_cert = sign_user_cert(user_ca, subject, IDENTITY, TTL)
    x509_cert = sign_client_cert(tls_ca, subject, IDENTITY, TTL)
    ssh_trust = ssh_trust_map([user_ca], CertAuthorityType.USER)
    x509_trust = tls_trust_map([tls_ca])

    def builder() -> object:
        return (
            ssh.SSHCertificateBuilder().public_key(subject)
            .serial(int.from_bytes(os.urandom(8), "big")).type(ssh.SSHCertificateType.USER)
            .key_id(b"user:alice").valid_principals([b"alice", b"ubuntu"])
            .valid_after(int(time.time()) - 60).valid_before(int(time.time()) + 28800)
            .add_extension(IDENTITY_EXTENSION.encode(), IDENTITY.to_json())
            .add_extension(b"permit-port-forwarding", b"").add_extension(b"permit-pty", b"")
            .sign(ed_key).public_bytes()
        )

    rows = [
        ("raw Ed25519 sign", lambda: ed_key.sign(message)),
        ("raw P-256 sign", lambda: p256.sign(message, ec.ECDSA(hashes.SHA256()))),
        ("SSH user cert (Limen encoder)", lambda: sign_user_cert(user_ca, subject, IDENTITY,
                                                                 TTL)),
        ("SSH user cert (SSHCertificateBuilder)", builder),
        ("X.509 client cert (P-256 CA)", lambda: sign_client_cert(tls_ca, subject, IDENTITY,
                                                                  TTL)),
        ("X.509 client cert (Ed25519 CA)", lambda: sign_client_cert(tls_ed, subject, IDENTITY,
                                                                    TTL)),
        ("SSH user cert verify", lambda: verify_ssh_user_cert(ssh_cert, ssh_trust)),
        ("X.509 client cert verify", lambda: verify_client_cert(x509_cert, x509_trust)),
    ]
    print(f"{'operation':40} {'per second':>12}")
    for name, fn in rows:
        print(f"{name:40} {rate(fn, seconds):12,.0f}")


if __name__ == "__main__":
    main()
