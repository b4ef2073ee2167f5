"""Auth's signed trust answer (``limen.auth.trust_signature``) and the node's acceptance of a
pushed one (``limen.trust.roots_poller.RemoteTrustCache.pushed``).

Attacks by a proxy that carries the answer: a forged signer (a node's certificate of the same
CA, an auth certificate of another CA claiming the cluster), a tampered answer (a root CA
added), another cluster's answer, an expired signer, an old or future date, a replay of an
older revision. Each is refused, ``on_refused`` hears it (the node audits it), and the last
good answer stays. Keepalives refresh the answer; one of another revision sends the node to
auth. Deny by default: nothing is trusted before a good answer.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from limen.auth.trust_signature import check_trust, sign_trust
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import PrivateKey, generate_private_key
from limen.ca.x509_certs import certificate_to_pem, sign_server_cert
from limen.errors import AccessDenied, BadParameter
from limen.trust.roots_poller import RemoteTrustCache

NOW = datetime.now(UTC).replace(microsecond=0)
"""The documents are dated around it; the CAs are valid from an hour before it."""
ROLE_MAP = [{"remote": "ops", "local": ["visitor"]}]


def _signer(tls_ca: CertAuthority, role: SystemRole = SystemRole.AUTH,
            cluster: str = "leaf", ttl: timedelta = timedelta(hours=1)
            ) -> tuple[PrivateKey, str]:
    key = generate_private_key()
    cert = sign_server_cert(tls_ca, key.public_key(), ["signer"], (), ttl,
                            Identity.for_host(cluster, "signer", "signer", role),
                            now=NOW - timedelta(minutes=1))
    return key, certificate_to_pem(cert)


def _root(name: str = "root") -> dict[str, Any]:
    cas = {t: CertAuthority.generate(name, t) for t in (CertAuthorityType.USER,
                                                        CertAuthorityType.HOST)}
    return {"trusted_cluster": name, "root_cluster": name, "proxy_address": "r:3080",
            "tunnel_address": "", "role_map": ROLE_MAP,
            "cas": {t.value: ca.public_only().to_dict() for t, ca in cas.items()}}


def _answer(revision: str, roots: list[dict[str, Any]], tls_ca: CertAuthority
            ) -> dict[str, Any]:
    return {"cluster": "leaf", "revision": revision, "roots": roots,
            "user_ca": CertAuthority.generate("leaf", CertAuthorityType.USER
                                              ).public_only().to_dict(),
            "tls_ca": tls_ca.public_only().to_dict()}


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


@pytest.fixture
def tls_ca() -> CertAuthority:
    # valid from before NOW, which is taken as this module is imported: under xdist a test
    # may run minutes later
    return CertAuthority.generate("leaf", CertAuthorityType.TLS, now=NOW - timedelta(hours=1))


def _doc(tls_ca: CertAuthority, answer: dict[str, Any] | None, *, revision: str = "r1",
         at: datetime = NOW, signer: tuple[PrivateKey, str] | None = None,
         cluster: str = "leaf") -> dict[str, Any]:
    key, cert = signer or _signer(tls_ca)
    return sign_trust(key, cert, cluster, revision, _ms(at), answer)


# ---------------------------------------------------------------------- check_trust


def test_a_good_answer_and_keepalive_verify(tls_ca: CertAuthority) -> None:
    answer = _answer("r1", [_root()], tls_ca)
    checked = check_trust(_doc(tls_ca, answer), "leaf", tls_ca.trusted_certificates(), NOW, 120)
    assert checked.answer == json.loads(json.dumps(answer))
    assert (checked.revision, checked.issued_at, checked.signer) == ("r1", _ms(NOW), "signer")
    keepalive = check_trust(_doc(tls_ca, None), "leaf", tls_ca.trusted_certificates(), NOW, 120)
    assert keepalive.answer is None


def test_a_signer_that_is_not_this_clusters_auth_is_refused(tls_ca: CertAuthority) -> None:
    answer = _answer("r1", [_root()], tls_ca)
    node = _signer(tls_ca, SystemRole.NODE)  # a node's certificate of the same CA
    with pytest.raises(AccessDenied, match="not a auth"):
        check_trust(_doc(tls_ca, answer, signer=node), "leaf", tls_ca.trusted_certificates(),
                    NOW, 120)
    forged_ca = CertAuthority.generate("leaf", CertAuthorityType.TLS)  # the proxy's own CA
    forged = _signer(forged_ca)
    with pytest.raises(AccessDenied):
        check_trust(_doc(tls_ca, answer, signer=forged), "leaf",
                    tls_ca.trusted_certificates(), NOW, 120)


def test_a_tampered_answer_is_refused(tls_ca: CertAuthority) -> None:
    doc = _doc(tls_ca, _answer("r1", [_root()], tls_ca))
    tampered = copy.deepcopy(doc)
    answer = json.loads(tampered["answer"])
    answer["roots"].append(_root("evil"))  # a root CA auth did not publish
    tampered["answer"] = json.dumps(answer)
    with pytest.raises(AccessDenied, match="signature does not verify"):
        check_trust(tampered, "leaf", tls_ca.trusted_certificates(), NOW, 120)
    for field, value in (("revision", "r2"), ("issued_at", doc["issued_at"] + 1)):
        changed = {**doc, field: value}
        with pytest.raises(AccessDenied, match="signature does not verify"):
            check_trust(changed, "leaf", tls_ca.trusted_certificates(), NOW, 120)


def test_another_clusters_answer_is_refused(tls_ca: CertAuthority) -> None:
    other_ca = CertAuthority.generate("other", CertAuthorityType.TLS)
    other = _doc(other_ca, {"cluster": "other", "revision": "r1", "roots": []},
                 signer=_signer(other_ca, cluster="other"), cluster="other")
    with pytest.raises(AccessDenied, match="names cluster 'other'"):
        check_trust(other, "leaf", tls_ca.trusted_certificates(), NOW, 120)
    # signed for "leaf" by the other cluster's auth: its CA is not leaf's
    relabelled = _doc(tls_ca, _answer("r1", [], tls_ca), signer=_signer(other_ca,
                                                                         cluster="other"))
    with pytest.raises(AccessDenied):
        check_trust(relabelled, "leaf", tls_ca.trusted_certificates(), NOW, 120)


def test_an_expired_signer_or_an_old_or_future_date_is_refused(tls_ca: CertAuthority) -> None:
    expired = _signer(tls_ca, ttl=timedelta(seconds=30))
    with pytest.raises(AccessDenied, match="expired"):
        check_trust(_doc(tls_ca, None, signer=expired), "leaf", tls_ca.trusted_certificates(),
                    NOW, 120)
    with pytest.raises(AccessDenied, match="old"):
        check_trust(_doc(tls_ca, None, at=NOW - timedelta(seconds=121)), "leaf",
                    tls_ca.trusted_certificates(), NOW, 120)
    with pytest.raises(AccessDenied, match="future"):
        check_trust(_doc(tls_ca, None, at=NOW + timedelta(seconds=121)), "leaf",
                    tls_ca.trusted_certificates(), NOW, 120)


def test_malformed_documents_are_bad_parameters(tls_ca: CertAuthority) -> None:
    good = _doc(tls_ca, None)
    for broken in ([], {**good, "issued_at": "now"}, {**good, "revision": ""},
                   {**good, "signature": "%%%"}, {**good, "cert": ""},
                   {**good, "answer": 5}):
        with pytest.raises((BadParameter, AccessDenied)):
            check_trust(broken, "leaf", tls_ca.trusted_certificates(), NOW, 120)
    mismatched = _doc(tls_ca, _answer("r2", [], tls_ca), revision="r1")
    with pytest.raises(BadParameter, match="another cluster or revision"):
        check_trust(mismatched, "leaf", tls_ca.trusted_certificates(), NOW, 120)


# ---------------------------------------------------------------------- the node's cache


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _cache(tls_ca: CertAuthority, refused: list[str]) -> tuple[RemoteTrustCache, Clock]:
    async def no_client() -> Any:
        raise AssertionError("this test never polls auth")

    clock = Clock(NOW.timestamp())
    own = CertAuthority.generate("leaf", CertAuthorityType.USER).ssh_public_keys()
    cache = RemoteTrustCache(no_client, "leaf", own, clock=clock, wall_clock=clock,
                             tls_ca_pem=tls_ca.pem_bundle().encode(),
                             on_refused=lambda reason, proxy: refused.append(reason))
    return cache, clock


def test_pushed_answers_are_applied_in_order_and_replays_refused(tls_ca: CertAuthority
                                                                 ) -> None:
    refused: list[str] = []
    cache, _clock = _cache(tls_ca, refused)
    assert cache.roots == {}
    assert not cache.push_current()
    first = _doc(tls_ca, _answer("r1", [_root()], tls_ca), at=NOW - timedelta(seconds=5))
    second = _doc(tls_ca, _answer("r2", [], tls_ca), revision="r2",
                  at=NOW - timedelta(seconds=2))
    assert cache.pushed(first, "p1")
    assert list(cache.roots) == ["root"]
    assert cache.push_current()
    assert cache.pushed(second, "p1")
    assert cache.roots == {}
    assert not cache.pushed(first, "p2")  # the older answer replayed (its root back)
    assert cache.roots == {}
    assert len(refused) == 1
    assert "replay" in refused[0]
    # an older copy of the current answer (another proxy's) is ignored, not refused
    older_copy = _doc(tls_ca, _answer("r2", [], tls_ca), revision="r2",
                      at=NOW - timedelta(seconds=3))
    assert not cache.pushed(older_copy, "p2")
    assert len(refused) == 1


def test_forged_pushes_keep_the_last_good_answer(tls_ca: CertAuthority) -> None:
    refused: list[str] = []
    cache, _clock = _cache(tls_ca, refused)
    assert not cache.pushed(_doc(tls_ca, _answer("r0", [_root("evil")], tls_ca), revision="r0",
                                 signer=_signer(tls_ca, SystemRole.PROXY)), "p1")
    assert cache.roots == {}  # nothing trusted before a good answer
    assert cache.pushed(_doc(tls_ca, _answer("r1", [_root()], tls_ca),
                             at=NOW - timedelta(seconds=1)), "p1")
    forged_ca = CertAuthority.generate("leaf", CertAuthorityType.TLS)
    forged = _doc(forged_ca, _answer("r9", [_root(), _root("evil")], forged_ca),
                  revision="r9", signer=_signer(forged_ca))
    assert not cache.pushed(forged, "p1")
    assert list(cache.roots) == ["root"]
    assert len(refused) == 2
    assert "evil" not in cache.ssh_user_trust()


def test_keepalives_refresh_and_one_of_another_revision_sends_the_node_to_auth(
        tls_ca: CertAuthority) -> None:
    refused: list[str] = []
    cache, clock = _cache(tls_ca, refused)
    assert cache.pushed(_doc(tls_ca, _answer("r1", [_root()], tls_ca)), "p1")
    for step in range(1, 5):  # 80 s of keepalives: fresh past max_stale (60 s)
        clock.now += 20
        keepalive = _doc(tls_ca, None, at=NOW + timedelta(seconds=20 * step))
        assert cache.pushed(keepalive, "p1")
    assert list(cache.roots) == ["root"]
    assert cache.push_current()
    clock.now += 10
    behind = _doc(tls_ca, None, revision="r2", at=NOW + timedelta(seconds=90))
    assert not cache.pushed(behind, "p1")
    assert not cache.push_current()
    assert refused == []
    clock.now += 61  # no answer since: stale, no root trusted
    assert cache.roots == {}
