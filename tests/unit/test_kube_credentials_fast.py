"""kubectl's exec plugin without click or cryptography (``limen.client.kube_credentials_main``
and ``limen.client.kube_credentials_fast``): for the same files its output is byte for byte
``lmsh kube credentials``'s (one kube cluster, ``--all``, a leaf's kube cluster), and it
imports neither cryptography nor click; every certificate the full command would not serve
(missing, expiring, expired, another kube cluster, another leaf, another cluster's or user's,
saved before a new ``lmsh login`` made a new key, a non-Ed25519 key, a YAML profile) is not
served from the file: the script hands over to the full path, whose answer (here: the
proxy cannot be reached for a fresh certificate) is exactly ``lmsh kube credentials``'s.
The real kubectl runs the plugin in tests/integration/test_kube_access.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import (
    PrivateKey,
    generate_private_key,
    private_key_to_openssh,
    private_key_to_pem,
    public_key_to_openssh,
)
from limen.ca.x509_certs import sign_client_cert
from limen.client import kube_credentials_fast
from limen.client.kube_access import any_cert_path, cert_path
from limen.client.kube_credentials_fast import Parsed, exec_command, parse_args
from limen.client.profile import Profile, ProfileStore
from limen.files import write_private

LMSH = str(Path(sys.executable).with_name("lmsh"))
PROXY = "127.0.0.1:1"  # nothing listens: a fresh certificate cannot be fetched
CLUSTER = "main"
TLS_CA = CertAuthority.generate(CLUSTER, CertAuthorityType.TLS)
OTHER_CA = CertAuthority.generate("other", CertAuthorityType.TLS)
ALICE = Identity(username="alice", cluster=CLUSTER, roles=("access",), usage=("kube",))


def _login(home: Path, key: PrivateKey | None = None) -> tuple[ProfileStore, Profile, PrivateKey]:
    """A saved login of alice at ``PROXY`` with ``key`` (default: a new Ed25519 key)."""
    key = key or generate_private_key()
    store = ProfileStore(home)
    expires = (datetime.now(UTC) + timedelta(hours=8)).isoformat()
    profile = Profile(PROXY, "alice", CLUSTER, expires, roles=("access",))
    store.save_login(profile, private_key=private_key_to_openssh(key).encode(),
                     public_key=public_key_to_openssh(key.public_key()).encode(),
                     ssh_cert=b"", tls_cert=sign_client_cert(
                         TLS_CA, key.public_key(), replace(ALICE, usage=()), timedelta(hours=8)
                     ).public_bytes(Encoding.PEM), tls_cas={CLUSTER: TLS_CA.pem_bundle().encode()},
                     host_ca_lines=[])
    return store, profile, key


def _save_cert(path: Path, key: PrivateKey, *, expires_in: timedelta = timedelta(hours=1),
               **identity: Any) -> bytes:
    """Save a kube certificate of ``key`` expiring in ``expires_in`` (issued 2 hours ago)."""
    issued = datetime.now(UTC) - timedelta(hours=2)
    scoped = replace(ALICE, **identity)
    cert = sign_client_cert(TLS_CA if scoped.cluster == CLUSTER else OTHER_CA,
                            key.public_key(), scoped, expires_in + timedelta(hours=2), now=issued)
    pem = cert.public_bytes(Encoding.PEM)
    write_private(path, pem)
    return pem


def _run(argv: list[str], home: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "LIMEN_HOME"}
    return subprocess.run(argv, env={**env, "LIMEN_HOME": str(home)}, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=60, check=False)


def _both(home: Path, args: list[str]) -> tuple[subprocess.CompletedProcess[bytes], ...]:
    command, before = exec_command(LMSH)
    return (_run([command, *before, "kube", "credentials", *args], home),
            _run([LMSH, "kube", "credentials", *args], home))


def _served(home: Path, parsed: Parsed) -> str | None:
    """The fast path's answer from the files, None when it hands over."""
    try:
        return kube_credentials_fast.saved_credential(parsed, str(home), datetime.now(UTC))
    except kube_credentials_fast.NotServed:
        return None


def test_the_exec_command_is_this_interpreter_isolated_on_the_script() -> None:
    command, args = exec_command(LMSH)
    assert command == os.path.abspath(sys.executable)
    assert args[:2] == ["-I", "-S"]
    assert Path(args[2]) == Path(kube_credentials_fast.__file__).with_name(
        "kube_credentials_main.py")


def test_the_arguments_the_kubeconfig_writes_parse_and_others_do_not() -> None:
    assert parse_args(["--proxy", "p:3080", "--cluster", "prod"]) == ("prod", "p:3080", "")
    assert parse_args(["--proxy=p:3080", "--all"]) == (None, "p:3080", "")
    assert parse_args(["--cluster", "prod", "--leaf-cluster", "leaf"]) == \
        ("prod", None, "leaf")
    for bad in (["--all", "--cluster", "prod"], [], ["--cluster"], ["--cluster", "--all"],
                ["--cluster", "a", "--cluster", "b"], ["--all", "--all"], ["--debug", "--all"],
                ["--cluster", "prod", "extra"], ["--cluster="]):
        assert parse_args(bad) is None, bad


@pytest.mark.parametrize(("args", "identity", "leaf"), [
    (["--cluster", "prod"], {"route_to_kube": "prod"}, ""),
    (["--all"], {}, ""),
    (["--cluster", "prod", "--leaf-cluster", "leaf1"],
     {"route_to_kube": "prod", "route_to_cluster": "leaf1"}, "leaf1"),
], ids=["name", "all", "leaf"])
def test_the_saved_certificate_is_printed_as_the_full_command_prints_it(
        tmp_path: Path, args: list[str], identity: dict[str, Any], leaf: str) -> None:
    store, profile, key = _login(tmp_path)
    path = any_cert_path(store, profile) if args == ["--all"] else \
        cert_path(store, profile, "prod", leaf)
    pem = _save_cert(path, key, **identity)
    fast, full = _both(tmp_path, ["--proxy", PROXY, *args])
    assert (fast.returncode, fast.stderr) == (0, b""), fast.stderr
    assert (full.returncode, full.stderr) == (0, b""), full.stderr
    assert fast.stdout == full.stdout
    status = json.loads(fast.stdout)["status"]
    assert status["clientCertificateData"] == pem.decode()
    assert status["clientKeyData"] == private_key_to_pem(key)
    parsed = parse_args(["--proxy", PROXY, *args])
    assert parsed is not None
    assert _served(tmp_path, parsed) == fast.stdout.decode().rstrip("\n")  # not handed over


def test_the_current_profile_is_used_without_proxy(tmp_path: Path) -> None:
    store, profile, key = _login(tmp_path)
    _save_cert(cert_path(store, profile, "prod"), key, route_to_kube="prod")
    fast, full = _both(tmp_path, ["--cluster", "prod"])
    assert fast.returncode == full.returncode == 0
    assert fast.stdout == full.stdout


def test_the_fast_path_imports_neither_cryptography_nor_click(tmp_path: Path) -> None:
    store, profile, key = _login(tmp_path)
    _save_cert(cert_path(store, profile, "prod"), key, route_to_kube="prod")
    src = str(Path(kube_credentials_fast.__file__).parents[2])
    code = (f"import sys; sys.path.append({src!r}); "
            "from limen.client.kube_credentials_fast import parse_args, serve; "
            "status = serve(parse_args(['--cluster', 'prod'])); "
            "print([m for m in ('cryptography', 'click', 'yaml', 'aiohttp', 'site') "
            "if m in sys.modules], status, file=sys.stderr)")
    done = _run([sys.executable, "-I", "-S", "-c", code], tmp_path)
    assert done.stderr == b"[] 0\n"
    assert json.loads(done.stdout)["kind"] == "ExecCredential"


def _refused(tmp_path: Path, parsed: Parsed, args: list[str]) -> None:
    """Not served from the files; the script answers as ``lmsh kube credentials``: it asks
    the proxy for a fresh certificate (here nothing listens) and reports that."""
    assert _served(tmp_path, parsed) is None
    fast, full = _both(tmp_path, args)
    assert fast.stdout == full.stdout == b""
    assert fast.returncode == full.returncode != 0
    assert fast.stderr == full.stderr
    assert fast.stderr.startswith(b"error: ")


CASES: dict[str, tuple[dict[str, Any], timedelta, str]] = {
    # saved certificate's identity fields, its validity, the file named by the call
    "another-kube-cluster": ({"route_to_kube": "staging"}, timedelta(hours=1), "prod"),
    "no-kube-cluster-named": ({}, timedelta(hours=1), "prod"),
    "another-leaf": ({"route_to_kube": "prod", "route_to_cluster": "leaf2"},
                     timedelta(hours=1), "prod"),
    "another-cluster": ({"route_to_kube": "prod", "cluster": "other"}, timedelta(hours=1),
                        "prod"),
    "another-user": ({"route_to_kube": "prod", "username": "bob"}, timedelta(hours=1), "prod"),
    "a-system-role": ({"route_to_kube": "prod", "system_role": SystemRole.PROXY},
                      timedelta(hours=1), "prod"),
    "not-for-kube": ({"route_to_kube": "prod", "usage": ()}, timedelta(hours=1), "prod"),
    "expiring": ({"route_to_kube": "prod"}, timedelta(seconds=50), "prod"),
    "expired": ({"route_to_kube": "prod"}, timedelta(hours=-1), "prod"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_certificate_the_full_command_would_not_serve_is_not_printed(
        tmp_path: Path, case: str) -> None:
    identity, ttl, name = CASES[case]
    store, profile, key = _login(tmp_path)
    _save_cert(cert_path(store, profile, name), key, expires_in=ttl, **identity)
    _refused(tmp_path, (name, PROXY, ""), ["--proxy", PROXY, "--cluster", name])


def test_a_certificate_of_the_leaf_is_not_served_for_the_root(tmp_path: Path) -> None:
    store, profile, key = _login(tmp_path)
    path = cert_path(store, profile, "prod")  # the root's file holding a leaf's certificate
    _save_cert(path, key, route_to_kube="prod", route_to_cluster="leaf1")
    _refused(tmp_path, ("prod", PROXY, ""), ["--proxy", PROXY, "--cluster", "prod"])


def test_a_named_certificate_is_not_served_for_all(tmp_path: Path) -> None:
    store, profile, key = _login(tmp_path)
    _save_cert(any_cert_path(store, profile), key, route_to_kube="prod")
    _refused(tmp_path, (None, PROXY, ""), ["--proxy", PROXY, "--all"])


def test_a_certificate_from_before_a_new_login_is_not_served(tmp_path: Path) -> None:
    store, profile, key = _login(tmp_path)
    _save_cert(cert_path(store, profile, "prod"), key, route_to_kube="prod")
    _login(tmp_path)  # lmsh login again: a new key
    _refused(tmp_path, ("prod", PROXY, ""), ["--proxy", PROXY, "--cluster", "prod"])


def test_a_missing_certificate_is_fetched(tmp_path: Path) -> None:
    _login(tmp_path)
    _refused(tmp_path, ("prod", PROXY, ""), ["--proxy", PROXY, "--cluster", "prod"])


def test_a_non_ed25519_key_takes_the_full_path(tmp_path: Path) -> None:
    from limen.ca.keys import KeyType

    key = generate_private_key(KeyType.ECDSA_P256)
    store, profile, _ = _login(tmp_path, key)
    _save_cert(cert_path(store, profile, "prod"), key, route_to_kube="prod")
    assert _served(tmp_path, ("prod", PROXY, "")) is None
    fast, full = _both(tmp_path, ["--proxy", PROXY, "--cluster", "prod"])
    assert fast.returncode == full.returncode == 0
    assert fast.stdout == full.stdout


def test_a_yaml_profile_takes_the_full_path(tmp_path: Path) -> None:
    store, profile, key = _login(tmp_path)
    _save_cert(cert_path(store, profile, "prod"), key, route_to_kube="prod")
    store.profile_path(PROXY).write_text(
        "".join(f"{k}: {v}\n" for k, v in
                (("proxy", f"'{PROXY}'"), ("user", "alice"), ("cluster", CLUSTER),
                 ("expires", f"'{profile.expires}'"))))
    assert _served(tmp_path, ("prod", PROXY, "")) is None
    fast, full = _both(tmp_path, ["--proxy", PROXY, "--cluster", "prod"])
    assert fast.returncode == full.returncode == 0
    assert fast.stdout == full.stdout


def test_a_bad_command_line_is_refused(tmp_path: Path) -> None:
    command, before = exec_command(LMSH)
    done = _run([command, *before, "kube", "credentials", "--cluster", "a", "--all"], tmp_path)
    assert (done.returncode, done.stdout) == (2, b"")
    assert done.stderr.startswith(b"error: usage: ")
