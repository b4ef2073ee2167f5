"""Attack: weak SSH algorithms on Limen's three SSH listeners (proxy SSH front, tunnel, node
agent) of a real ``limen start --random-ports``.

* ``ssh-audit`` (the console script of the virtualenv) checks each listener against
  ``limen_hardened_ssh_policy.txt`` (next to this file; it explains why it is a custom policy
  rather than ssh-audit's built-in "Hardened OpenSSH Server v10.x": those demand sntrup761 and
  RSA host keys as exact lists) and must pass: hybrid/curve25519 key exchange with the
  strict-KEX marker (Terrapin, CVE-2023-48795), AEAD ciphers, SHA-2 ETM MACs, Ed25519 host
  keys, no compression.
* The stock OpenSSH client offering only a weak algorithm (SHA-1 Diffie-Hellman, a NIST-curve
  key exchange, a CBC or CTR cipher, a SHA-1 MAC, an ECDSA host key) is refused by every
  listener during negotiation, before any authentication.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from integration.cluster import ClusterFactory, LimenCluster, clean_env

POLICY = Path(__file__).with_name("limen_hardened_ssh_policy.txt")
SSH_AUDIT = Path(sys.executable).parent / "ssh-audit"
LISTENERS = ("ssh_proxy", "tunnel", "node_ssh")
WEAK_CLIENTS = {
    "sha1-dh": (["-o", "KexAlgorithms=diffie-hellman-group14-sha1"],
                "no matching key exchange method"),
    "nist-kex": (["-o", "KexAlgorithms=ecdh-sha2-nistp256"], "no matching key exchange method"),
    "group-exchange": (["-o", "KexAlgorithms=diffie-hellman-group-exchange-sha256"],
                       "no matching key exchange method"),
    "cbc": (["-c", "aes128-cbc"], "no matching cipher"),
    "ctr": (["-c", "aes256-ctr"], "no matching cipher"),
    "sha1-mac": (["-c", "aes128-ctr", "-m", "hmac-sha1"], "no matching"),
    "ecdsa-host-key": (["-o", "HostKeyAlgorithms=ecdsa-sha2-nistp256,"
                        "ecdsa-sha2-nistp256-cert-v01@openssh.com"],
                       "no matching host key type"),
}


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    return module_clusters("hardened")


def _address(cluster: LimenCluster, listener: str) -> tuple[str, int]:
    host, _, port = cluster.listeners[listener].rpartition(":")
    return host, int(port)


@pytest.mark.parametrize("listener", LISTENERS)
def test_ssh_audit_hardened_policy_passes(site: LimenCluster, listener: str) -> None:
    assert SSH_AUDIT.exists(), f"{SSH_AUDIT} is missing: install the test dependencies"
    host, port = _address(site, listener)
    result = subprocess.run(
        [str(SSH_AUDIT), "-j", "-P", str(POLICY), "-p", str(port), host],
        capture_output=True, text=True, timeout=120, check=False, env=clean_env())
    assert result.stdout.strip(), result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["policy"].startswith("Limen hardened SSH server"), verdict
    assert verdict["passed"] is True, json.dumps(verdict, indent=2)
    assert verdict["errors"] == [], verdict
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("listener", LISTENERS)
def test_strict_kex_and_only_hardened_algorithms_offered(site: LimenCluster,
                                                         listener: str) -> None:
    """The full scan: what each listener offers, algorithm by algorithm."""
    host, port = _address(site, listener)
    result = subprocess.run([str(SSH_AUDIT), "-j", "--skip-rate-test", "-p", str(port), host],
                            capture_output=True, text=True, timeout=120, check=False,
                            env=clean_env())
    scan = json.loads(result.stdout)
    kex = [entry["algorithm"] for entry in scan["kex"]]
    assert "kex-strict-s-v00@openssh.com" in kex, kex
    assert "curve25519-sha256" in kex, kex
    assert not [a for a in kex if "nistp" in a or "diffie-hellman" in a or "sha1" in a], kex
    ciphers = [entry["algorithm"] for entry in scan["enc"]]
    assert ciphers
    assert all(c.endswith(("-gcm@openssh.com", "chacha20-poly1305@openssh.com"))
               for c in ciphers), ciphers
    macs = [entry["algorithm"] for entry in scan["mac"]]
    assert macs
    assert all(m.startswith("hmac-sha2-") and m.endswith("-etm@openssh.com") for m in macs), macs
    keys = [entry["algorithm"] for entry in scan["key"]]
    assert keys
    assert all(k.startswith("ssh-ed25519") for k in keys), keys
    assert scan["compression"] == ["none"], scan["compression"]


@pytest.mark.parametrize("weak", sorted(WEAK_CLIENTS))
@pytest.mark.parametrize("listener", LISTENERS)
def test_client_with_only_weak_algorithms_is_refused(site: LimenCluster, listener: str,
                                                     weak: str, tmp_path: Path) -> None:
    flags, message = WEAK_CLIENTS[weak]
    host, port = _address(site, listener)
    result = subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "ConnectTimeout=20",
         *flags, "-p", str(port), f"probe@{host}", "true"],
        capture_output=True, text=True, timeout=60, check=False, env=clean_env())
    assert result.returncode == 255, result.stderr
    assert "Unable to negotiate" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr
