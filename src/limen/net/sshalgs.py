"""The one definition of the SSH algorithms Limen offers and accepts ("hardened" sets).

Every SSH listener Limen runs (the proxy's SSH front, the tunnel server, the node agent) and
every SSH client it runs itself (``lmsh proxy ssh``, the tunnel agent) takes its algorithm
options from here, so the three listeners pass the same hardened-server check (ssh-audit,
``tests/security/test_ssh_hardening.py``) and no listener offers more than another:

* key exchange: the post-quantum hybrids (``mlkem768x25519-sha256``; sntrup761 when asyncssh
  can do it) and ``curve25519-sha256``. asyncssh adds the markers ``ext-info-s`` /
  ``ext-info-c`` and the strict-KEX markers ``kex-strict-s-v00@openssh.com`` /
  ``kex-strict-c-v00@openssh.com`` on its own (the Terrapin countermeasure, CVE-2023-48795);
  the ssh-audit test checks that it still does. No NIST curves, no finite-field
  Diffie-Hellman (no group exchange, no SHA-1), no RSA key exchange.
* ciphers: AEAD only, AES-GCM first (asyncssh's chacha20-poly1305 costs ~1.8x AES-GCM in
  CPU per byte), then chacha20-poly1305. No CTR, no CBC: every client Limen supports (OpenSSH
  6.5 and later) has AES-GCM and chacha20.
* MACs: encrypt-then-MAC SHA-2 only (AEAD ciphers carry their own tag; the list is what a
  client that insists on a MAC may pick).
* host keys: Ed25519 and RSA with SHA-2 signatures, plain and certified. A server offers what
  its keys are (asyncssh derives the list from them); a Limen client accepts only these.
* compression: none.
* packets: asyncssh's 32 KiB channel packets (:data:`MAX_PACKET`).

Importing this module also installs :mod:`limen.net.asyncssh_recv` (asyncssh's receive path
without a whole-buffer copy per packet): every Limen SSH endpoint imports it, so this is the
one place that does.

Stock OpenSSH 9.2 (Debian 12; it has sntrup761 but not ML-KEM) negotiates ``curve25519-sha256``,
``aes128-gcm@openssh.com`` and ``ssh-ed25519-cert-v01@openssh.com`` with these sets.
"""

from __future__ import annotations

from typing import Any

from asyncssh.encryption import get_encryption_algs
from asyncssh.kex import get_kex_algs
from asyncssh.mac import get_mac_algs

from limen.net import asyncssh_recv

__all__ = [
    "COMPRESSION_ALGS",
    "ENCRYPTION_ALGS",
    "HOST_KEY_ALGS",
    "KEX_ALGS",
    "MAC_ALGS",
    "MAX_PACKET",
    "client_algorithms",
    "server_algorithms",
]

_WANTED_KEX = (
    "mlkem768x25519-sha256",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
)


def _available(wanted: tuple[str, ...], supported: list[bytes]) -> tuple[str, ...]:
    names = {alg.decode() for alg in supported}
    return tuple(alg for alg in wanted if alg in names)


KEX_ALGS: tuple[str, ...] = _available(_WANTED_KEX, get_kex_algs())
"""Hardened key exchanges this asyncssh can do, most preferred first."""
ENCRYPTION_ALGS: tuple[str, ...] = _available(
    ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"),
    get_encryption_algs())
MAC_ALGS: tuple[str, ...] = _available(
    ("hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"), get_mac_algs())
HOST_KEY_ALGS: tuple[str, ...] = (
    "ssh-ed25519-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
"""Server host key algorithms a Limen client accepts (servers offer what their keys are)."""
COMPRESSION_ALGS: tuple[str, ...] = ("none",)
MAX_PACKET = 32768
"""Channel packet size of every Limen SSH endpoint (``max_pktsize``): asyncssh's default;
larger packets measured slower (DESIGN.md)."""

asyncssh_recv.install()

if "curve25519-sha256" not in KEX_ALGS or not ENCRYPTION_ALGS or not MAC_ALGS:
    raise ImportError("this asyncssh lacks curve25519-sha256, AES-GCM or the SHA-2 ETM MACs")


def server_algorithms() -> dict[str, Any]:
    """Keyword arguments for ``asyncssh.SSHServerConnectionOptions``: the hardened sets."""
    return {"kex_algs": list(KEX_ALGS), "encryption_algs": list(ENCRYPTION_ALGS),
            "mac_algs": list(MAC_ALGS), "compression_algs": list(COMPRESSION_ALGS)}


def client_algorithms() -> dict[str, Any]:
    """Keyword arguments for ``asyncssh.connect``: the hardened sets, host keys included."""
    return {**server_algorithms(), "server_host_key_algs": list(HOST_KEY_ALGS)}

