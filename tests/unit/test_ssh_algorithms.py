"""The one hardened SSH algorithm definition: nothing weak in it, and asyncssh takes it as
server and as client options."""

from __future__ import annotations

import asyncssh

from limen.ca.keys import generate_private_key, private_key_to_openssh
from limen.net import sshalgs


def test_only_hardened_algorithms() -> None:
    assert set(sshalgs.KEX_ALGS) <= {
        "mlkem768x25519-sha256", "sntrup761x25519-sha512", "sntrup761x25519-sha512@openssh.com",
        "curve25519-sha256", "curve25519-sha256@libssh.org"}
    assert "curve25519-sha256" in sshalgs.KEX_ALGS
    assert set(sshalgs.ENCRYPTION_ALGS) <= {
        "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"}
    assert sshalgs.ENCRYPTION_ALGS[0] == "aes128-gcm@openssh.com"  # fastest in asyncssh
    assert set(sshalgs.MAC_ALGS) <= {"hmac-sha2-256-etm@openssh.com",
                                     "hmac-sha2-512-etm@openssh.com"}
    assert not [a for a in sshalgs.HOST_KEY_ALGS
                if not a.startswith(("ssh-ed25519", "rsa-sha2-"))]
    assert sshalgs.COMPRESSION_ALGS == ("none",)


async def test_asyncssh_accepts_them() -> None:
    key = asyncssh.import_private_key(private_key_to_openssh(generate_private_key()))
    server = await asyncssh.SSHServerConnectionOptions.construct(
        server_host_keys=[key], **sshalgs.server_algorithms())
    assert [a.decode() for a in server.kex_algs] == list(sshalgs.KEX_ALGS)
    assert [a.decode() for a in server.encryption_algs] == list(sshalgs.ENCRYPTION_ALGS)
    assert [a.decode() for a in server.mac_algs] == list(sshalgs.MAC_ALGS)
    client = await asyncssh.SSHClientConnectionOptions.construct(
        known_hosts=None, **sshalgs.client_algorithms())
    assert list(client.server_host_key_algs) == list(sshalgs.HOST_KEY_ALGS)
