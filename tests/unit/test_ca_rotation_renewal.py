"""A host renews its SSH host certificate during a host CA rotation (limen.auth.host_renewal,
POST /v1/host/renew over real mutual TLS): the same host, key and principals signed by the
new key; another host's certificate, a user, or a certificate of a dropped key are refused and
audited."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from auth_api_identities import alice_credentials, running_auth

from limen.auth.auth_service import AuthService
from limen.auth.client import AuthClient
from limen.auth.host_renewal import reissue_own_host_cert
from limen.auth.rotation_service import rotate_ca
from limen.ca.authority import CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.ca.ssh_certs import parse_ssh_cert, verify_ssh_host_cert
from limen.errors import AccessDenied
from limen.events.emitter import MemoryEmitter


def _host(auth: AuthService, host_id: str) -> HostCredentials:
    key = generate_private_key()
    certs = auth.server.issue_host_certs(host_id, f"{host_id}.example", SystemRole.NODE,
                                         public_key_to_openssh(key.public_key()),
                                         ["10.0.0.7"])
    return HostCredentials(cluster="unit", host_id=host_id, role="node",
                           private_key_pem=private_key_to_pem(key).encode(),
                           tls_cert_pem=certs.tls_cert, tls_ca_pem=certs.tls_cas.encode(),
                           ssh_cert=certs.ssh_cert)


async def _renew(auth: AuthService, caller: HostCredentials, cert: bytes) -> dict[str, Any]:
    client = AuthClient(auth.address, caller)
    try:
        answer: dict[str, Any] = await client.call("POST", "/v1/host/renew",
                                                   {"ssh_cert": cert.decode()})
        return answer
    finally:
        await client.close()


async def test_renewal_signs_the_same_host_with_the_new_key(tmp_path: Path) -> None:
    async with running_auth(tmp_path) as auth:
        node = _host(auth, "node-1")
        for phase in (None, "update_clients", "update_servers"):
            await rotate_ca(auth.server, "host", actor="admin", phase=phase)
        answer = await _renew(auth, node, node.ssh_cert)
        old, new = parse_ssh_cert(node.ssh_cert), parse_ssh_cert(answer["ssh_cert"])
        assert new.valid_principals == old.valid_principals
        assert new.public_key() == old.public_key()
        assert new.signature_key() != old.signature_key()
        assert len(answer["host_ca_keys"]) == 2
        await rotate_ca(auth.server, "host", actor="admin", phase="standby")
        renewed = replace(node, ssh_cert=answer["ssh_cert"].encode())
        assert (await _renew(auth, renewed, renewed.ssh_cert))["ssh_cert"]


async def test_refusals_are_audited(tmp_path: Path) -> None:
    async with running_auth(tmp_path) as auth:
        emitter = auth.server.emitter
        assert isinstance(emitter, MemoryEmitter)
        node, other = _host(auth, "node-1"), _host(auth, "node-2")
        with pytest.raises(AccessDenied, match="node-2's, not the caller's"):
            await _renew(auth, node, other.ssh_cert)  # a stolen certificate of another host
        with pytest.raises(AccessDenied, match="only a host"):
            await _renew(auth, alice_credentials(auth), node.ssh_cert)
        for phase in (None, "update_clients", "update_servers", "standby"):
            await rotate_ca(auth.server, "host", actor="admin", phase=phase)
        with pytest.raises(AccessDenied, match="untrusted CA"):
            await _renew(auth, node, node.ssh_cert)  # signed by the dropped key
        refused = [e for e in emitter.events
                   if e.type.value == "cert.create" and e.success is False]
        assert [e.user for e in refused] == ["node-1", "alice", "node-1"]


async def test_a_part_of_auths_process_renews_even_after_the_phase_it_missed(
        tmp_path: Path) -> None:
    """The proxy or node in auth's own process renews by a direct signature: one whose look at
    the CAs fell between update_servers and standby still gets a certificate of the new key
    (through POST /v1/host/renew a certificate of the dropped key is refused, above)."""
    async with running_auth(tmp_path) as auth:
        node = _host(auth, "node-1")
        for phase in (None, "update_clients", "update_servers", "standby"):
            await rotate_ca(auth.server, "host", actor="admin", phase=phase)
        caller = Identity.for_host("unit", "node-1", "node-1.example", SystemRole.NODE)
        answer = await reissue_own_host_cert(auth.server, caller, node.ssh_cert.decode())
        new = parse_ssh_cert(answer["ssh_cert"])
        assert new.public_key() == parse_ssh_cert(node.ssh_cert).public_key()
        assert len(answer["host_ca_keys"]) == 1  # the new key only
        trusted = (await auth.server.authorities.trusted(CertAuthorityType.HOST))["unit"]
        held = verify_ssh_host_cert(answer["ssh_cert"], {"unit": trusted.trusted_public_keys()},
                                    auth.server.now())
        assert (held.host_id, held.hostname) == ("node-1", "node-1.example")
        user = Identity(username="alice", cluster="unit", roles=("dev",))
        with pytest.raises(AccessDenied, match="only a host"):
            await reissue_own_host_cert(auth.server, user, node.ssh_cert.decode())
