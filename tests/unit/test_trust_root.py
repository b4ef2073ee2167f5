"""Trusted clusters, root side (limen.auth.trusted_clusters.root_handshake): the wire format is
validated, a good token admits the leaf once (RemoteCluster + the leaf's public CAs), a used,
expired or wrong token and a clashing name are refused and audited."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from limen.api.resources import Kind
from limen.auth.core import AuthServer
from limen.auth.trusted_clusters.root_handshake import validate_trusted_cluster
from limen.auth.trusted_clusters.wire import (
    EXCHANGED_TYPES,
    CASet,
    ValidateRequest,
    ValidateResponse,
)
from limen.backend.memory import MemoryBackend
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key
from limen.ca.x509_certs import sign_server_cert
from limen.config import ClusterSettings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


def leaf_cas(name: str = "leaf") -> CASet:
    return CASet.of({t: CertAuthority.generate(name, t) for t in EXCHANGED_TYPES})


@pytest.fixture
async def root() -> tuple[AuthServer, MemoryEmitter, Clock]:
    clock, emitter = Clock(), MemoryEmitter()
    server = AuthServer(MemoryBackend(clock=clock, sweep_interval=None),
                        ClusterSettings(name="root"), emitter, clock=clock)
    await server.start()
    return server, emitter, clock


async def _token(auth: AuthServer, ttl: float = 3600, kind: str = "trusted_cluster",
                 labels: dict[str, str] | None = None) -> str:
    secret, _ = await auth.create_token(kind, timedelta(seconds=ttl), actor="admin",
                                        labels=labels)
    return secret


def _joins(emitter: MemoryEmitter) -> list[tuple[bool, dict[str, Any]]]:
    return [(e.success, dict(e.fields)) for e in emitter.events if e.type.value == "join"]


async def test_good_token_admits_the_leaf_once(root: tuple[AuthServer, MemoryEmitter, Clock]
                                               ) -> None:
    auth, emitter, _ = root
    token = await _token(auth, labels={"env": "prod"})
    cas = leaf_cas()
    answer = await validate_trusted_cluster(auth, ValidateRequest(token, "leaf", cas),
                                            remote_addr="10.1.1.1")
    assert answer.root_cluster == "root"
    own = auth.authorities.get(CertAuthorityType.USER)
    assert answer.cas.user == own.ssh_public_keys()
    assert answer.cas.tls == auth.authorities.get(CertAuthorityType.TLS).pem_bundle()
    assert "PRIVATE" not in str(answer.to_json())
    remote = await auth.store.get(Kind.REMOTE_CLUSTER, "leaf")
    assert remote.spec == {"connection": "offline", "last_heartbeat": None}
    assert remote.labels == {"env": "prod"}
    stored = await auth.store.get(Kind.CERT_AUTHORITY, "user.leaf")
    assert stored.labels == {"limen.dev/cluster": "leaf", "limen.dev/trust": "remote"}
    assert CertAuthority.from_dict(stored.spec).ssh_public_keys() == cas.user
    assert (await auth.store.get(Kind.CERT_AUTHORITY, "host.leaf")).spec["cluster"] == "leaf"
    assert (await auth.store.get(Kind.CERT_AUTHORITY, "tls.leaf")).spec["type"] == "tls"
    assert _joins(emitter)[-1][0] is True
    assert _joins(emitter)[-1][1]["leaf_cluster"] == "leaf"
    # the token was consumed: the same one cannot admit another leaf
    with pytest.raises(AccessDenied, match=r"already used|invalid or expired"):
        await validate_trusted_cluster(auth, ValidateRequest(token, "leaf2", leaf_cas("leaf2")))
    assert await auth.store.find(Kind.REMOTE_CLUSTER, "leaf2") is None
    assert _joins(emitter)[-1][0] is False


@pytest.mark.parametrize("case", ["expired", "wrong type", "garbage", "own name", "known leaf"])
async def test_refusals_are_audited(root: tuple[AuthServer, MemoryEmitter, Clock],
                                    case: str) -> None:
    auth, emitter, clock = root
    token = await _token(auth, ttl=60, kind="node" if case == "wrong type"
                         else "trusted_cluster")
    leaf = "root" if case == "own name" else "leaf"
    if case == "expired":
        clock.now += 61
    if case == "garbage":
        token = "0" * 64
    if case == "known leaf":
        first = await _token(auth)
        await validate_trusted_cluster(auth, ValidateRequest(first, "leaf", leaf_cas()))
    with pytest.raises(AccessDenied, match="trusted cluster refused"):
        await validate_trusted_cluster(auth, ValidateRequest(token, leaf, leaf_cas(leaf)))
    success, fields = _joins(emitter)[-1]
    assert success is False
    assert fields["role"] == "trusted_cluster"
    assert fields["reason"]
    if case != "known leaf":
        assert await auth.store.find(Kind.REMOTE_CLUSTER, leaf) is None


def _request_body() -> dict[str, Any]:
    return ValidateRequest("t" * 64, "leaf", leaf_cas()).to_json()


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda b: b.pop("token"), "token is required"),
    (lambda b: b.update(leaf_cluster="Bad Name"), "leaf_cluster must be a cluster name"),
    (lambda b: b.update(leaf_cas=[]), "leaf_cas must be an object"),
    (lambda b: b["leaf_cas"].update(user=[]), "leaf_cas.user must be a list"),
    (lambda b: b["leaf_cas"].update(host=["not a key"]), "leaf_cas"),
    (lambda b: b["leaf_cas"].update(tls="nope"), "leaf_cas.tls must be the PEM"),
])
def test_request_validation(mutate: Any, message: str) -> None:
    body = _request_body()
    assert ValidateRequest.from_json(body).leaf_cluster == "leaf"
    mutate(body)
    with pytest.raises(BadParameter, match=message):
        ValidateRequest.from_json(body)


def test_tls_must_be_a_ca_certificate() -> None:
    tls_ca = CertAuthority.generate("leaf", CertAuthorityType.TLS)
    leaf_cert = sign_server_cert(tls_ca, generate_private_key().public_key(), ["h"], [],
                                 timedelta(hours=1),
                                 Identity.for_host("leaf", "h", "h", SystemRole.NODE))
    body = _request_body()
    body["leaf_cas"]["tls"] = leaf_cert.public_bytes(Encoding.PEM).decode()
    with pytest.raises(BadParameter, match="is not a CA"):
        ValidateRequest.from_json(body)


def test_response_round_trip_and_validation() -> None:
    response = ValidateResponse("root", leaf_cas("root"))
    assert ValidateResponse.from_json(response.to_json()) == response
    with pytest.raises(BadParameter, match="root_cluster"):
        ValidateResponse.from_json({**response.to_json(), "root_cluster": ""})
    with pytest.raises(BadParameter, match="JSON object"):
        ValidateResponse.from_json(["x"])
