"""Auth's trust answer signed, so that a proxy can carry it to the nodes without being able to
change it.

::

    auth   sign_trust(its signing key, an AUTH certificate of this cluster's TLS CA,
                      cluster, revision, issued_at, answer | None)
        {cluster, revision, issued_at, answer: the answer's JSON text | "" (a keepalive:
         "revision is still current"), cert: the signer's certificate (PEM), signature}
        signature = sign(key, "limen-trust-answer-v1\\n" + JSON [cluster, revision, issued_at,
                                                                answer])
    ── proxy (``limen.proxy.trust_push``) ── tunnel ``trust`` message ──▶ node
    node   check_trust(doc, cluster, the TLS CA certificates it trusts now, now, max_age)

The node does not take the proxy's word for anything: the document must name the node's
cluster, its certificate must chain to the cluster's TLS CA the node trusts and carry the
``auth`` role (``limen.ca.x509_certs.verify_server_cert``, expiry included), the signature
must verify with that certificate's key over every field, ``issued_at`` must be within
``max_age`` of the node's clock (an old copy is a replay), and the answer must name the same
cluster and revision. Whether it is newer than the last document accepted is the caller's
check (``limen.trust.roots_poller``). Pure functions (the clock is a parameter); signed by
``limen.auth.http.trust_signer``, checked by ``limen.trust.roots_poller.RemoteTrustCache``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from limen.ca.identity import SystemRole
from limen.ca.keys import PrivateKey, sign_message, signature_verifies
from limen.ca.x509_certs import load_certificate, verify_server_cert
from limen.errors import AccessDenied, BadParameter

__all__ = ["SIGNED_TRUST_PATH", "SignedTrust", "check_trust", "sign_trust"]

SIGNED_TRUST_PATH = "/v1/trust/roots/signed"
"""Auth's trust answer, signed (``limen.auth.http.trust_leaf``)."""
_CONTEXT = b"limen-trust-answer-v1\n"
_MAX_CERT = 16 * 1024
_MAX_SIGNATURE = 1024
_MAX_REVISION = 128


@dataclass(frozen=True)
class SignedTrust:
    """A signed document that passed every check."""

    revision: str
    issued_at: int
    """Unix milliseconds, by auth's clock."""
    answer: Mapping[str, Any] | None
    """The full answer; None for a keepalive."""
    signer: str
    """Host id of the auth certificate that signed it."""


def _message(cluster: str, revision: str, issued_at: int, answer: str) -> bytes:
    text = json.dumps([cluster, revision, issued_at, answer], separators=(",", ":"))
    return _CONTEXT + text.encode()


def sign_trust(key: PrivateKey, cert_pem: str, cluster: str, revision: str, issued_at: int,
               answer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The signed document (see the module doc); ``answer`` None makes a keepalive."""
    text = "" if answer is None else json.dumps(answer, sort_keys=True,
                                                separators=(",", ":"), default=str)
    message = _message(cluster, revision, issued_at, text)
    signature = sign_message(key, message)
    return {"cluster": cluster, "revision": revision, "issued_at": issued_at, "answer": text,
            "cert": cert_pem, "signature": base64.b64encode(signature).decode()}


def check_trust(doc: Any, cluster: str, tls_cas: Sequence[x509.Certificate], now: datetime,
                max_age: float) -> SignedTrust:
    """``doc`` checked as auth's signed trust answer for ``cluster`` (see the module doc):
    :class:`AccessDenied` for another cluster, a signer that is not this cluster's auth, a bad
    signature, or a date more than ``max_age`` seconds away from ``now``;
    :class:`BadParameter` for a malformed document."""
    if not isinstance(doc, Mapping):
        raise BadParameter("the signed trust answer must be an object")
    if doc.get("cluster") != cluster:
        raise AccessDenied(f"the signed trust answer names cluster "
                           f"{str(doc.get('cluster'))[:80]!r}, not {cluster!r}")
    revision, issued_at, text = doc.get("revision"), doc.get("issued_at"), doc.get("answer")
    cert, signature = doc.get("cert"), doc.get("signature")
    if not isinstance(revision, str) or not revision or len(revision) > _MAX_REVISION:
        raise BadParameter("the signed trust answer needs a revision")
    if not isinstance(issued_at, int) or isinstance(issued_at, bool) or issued_at <= 0:
        raise BadParameter("the signed trust answer needs issued_at (unix milliseconds)")
    if not isinstance(text, str):
        raise BadParameter("the signed trust answer's answer must be JSON text or empty")
    if not isinstance(cert, str) or not cert or len(cert) > _MAX_CERT or \
            not isinstance(signature, str) or len(signature) > _MAX_SIGNATURE:
        raise BadParameter("the signed trust answer needs the signer's cert and a signature")
    identity = verify_server_cert(cert, {cluster: list(tls_cas)}, SystemRole.AUTH, now)
    if identity.cluster != cluster:
        raise AccessDenied(f"the trust answer is signed by {identity.username} of "
                           f"{identity.cluster}, not by auth of {cluster}")
    try:
        raw = base64.b64decode(signature, validate=True)
    except binascii.Error:
        raise BadParameter("the signed trust answer's signature is not base64") from None
    key = load_certificate(cert).public_key()
    if not signature_verifies(key, raw, _message(cluster, revision, issued_at, text)):
        raise AccessDenied("the trust answer's signature does not verify with auth's "
                           "certificate")
    age = now.timestamp() - issued_at / 1000
    if age > max_age:
        raise AccessDenied(f"the signed trust answer is {age:.0f} s old (at most "
                           f"{max_age:.0f} s): a replay, or auth's clock is off")
    if age < -max_age:
        raise AccessDenied("the signed trust answer is dated in the future")
    return SignedTrust(revision, issued_at, _answer(text, cluster, revision),
                       identity.host_id or identity.username)


def _answer(text: str, cluster: str, revision: str) -> Mapping[str, Any] | None:
    if not text:
        return None
    try:
        answer = json.loads(text)
    except (ValueError, RecursionError):
        raise BadParameter("the signed trust answer's answer is not JSON") from None
    if not isinstance(answer, dict) or answer.get("cluster") != cluster \
            or answer.get("revision") != revision:
        raise BadParameter("the signed trust answer's answer names another cluster or "
                           "revision")
    return answer

