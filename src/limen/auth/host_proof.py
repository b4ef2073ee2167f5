"""Proof that a joiner is the host it claims to be: its current certificate and a signature.

A host id belongs to the host auth first certified under it. Joining again under that id (to
renew credentials) needs the host's current TLS certificate and a signature, by that
certificate's key, over the new request::

    proof = {"cert": <PEM of the current TLS certificate>, "time": <unix seconds>,
             "signature": base64(sign(current key, MESSAGE))}
    MESSAGE = "limen-rejoin-v1\\n" + JSON [cluster, host_id, role, new public key, time]

The signature binds the new public key, so a proof seen by someone else buys them nothing;
``time`` must be within :data:`MAX_SKEW` of auth's clock. It travels in the join body, so it
works the same through the proxy's web API and at auth's join listener. Built by the agents
(``limen.agents.joining``, ``limen.auth.client``); checked by ``limen.auth.host_registry``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509

from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import load_private_key, sign_message, signature_verifies
from limen.ca.x509_certs import load_certificate, verify_client_cert
from limen.errors import AccessDenied, BadParameter

__all__ = ["MAX_SKEW", "make_proof", "verify_proof"]

MAX_SKEW = 300
"""Seconds a proof's time may be away from auth's clock."""
_CONTEXT = b"limen-rejoin-v1\n"


def _message(cluster: str, host_id: str, role: str, public_key: str, when: int) -> bytes:
    return _CONTEXT + json.dumps([cluster, host_id, role, public_key.strip(), when]).encode()


def make_proof(credentials: HostCredentials, role: SystemRole, public_key: str,
               now: datetime) -> dict[str, Any]:
    """The proof for joining again as ``credentials`` with the new ``public_key`` (OpenSSH)."""
    when = int(now.timestamp())
    message = _message(credentials.cluster, credentials.host_id, role.value, public_key, when)
    key = load_private_key(credentials.private_key_pem)
    return {"cert": credentials.tls_cert_pem.decode(), "time": when,
            "signature": base64.b64encode(sign_message(key, message)).decode()}


def verify_proof(proof: Mapping[str, Any], *, trusted: Mapping[str, Sequence[x509.Certificate]],
                 cluster: str, host_id: str, role: SystemRole, public_key: str,
                 now: datetime) -> tuple[Identity, x509.Certificate]:
    """The identity and certificate of a valid proof for this request; ``AccessDenied``
    otherwise."""
    cert_pem, when, signature = proof.get("cert"), proof.get("time"), proof.get("signature")
    if not isinstance(cert_pem, str) or not isinstance(when, int) or \
            not isinstance(signature, str) or len(cert_pem) > 16384 or len(signature) > 1024:
        raise AccessDenied("malformed proof of the current certificate")
    try:
        cert = load_certificate(cert_pem)
        raw = base64.b64decode(signature, validate=True)
    except (BadParameter, binascii.Error):
        raise AccessDenied("malformed proof of the current certificate") from None
    identity = verify_client_cert(cert, trusted, now)
    if (identity.cluster, identity.host_id, identity.system_role) != (cluster, host_id, role):
        raise AccessDenied(f"the certificate offered as proof is not the {role.value} "
                           f"{host_id}'s")
    if abs(now.timestamp() - when) > MAX_SKEW:
        raise AccessDenied("the proof of the current certificate is too old or from the future")
    message = _message(cluster, host_id, role.value, public_key, when)
    if not signature_verifies(cert.public_key(), raw, message):
        raise AccessDenied("the proof's signature does not verify with the current certificate")
    return identity, cert


