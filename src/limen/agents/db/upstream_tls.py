"""The TLS a db agent speaks to a database: its client certificate per database user and how
it verifies the server.

The agent holds one ECDSA P-256 key; for each database user it asks auth for a client
certificate (DB CA, subject ``CN=<user>``, an hour) and caches it until ten minutes before it
expires, or until the DB CA's keys change (a rotation of the db CA, ``limen.auth.rotation``:
``init`` adds a trusted key, ``update_clients`` and ``rollback`` sign with another one, and
after ``standby`` the databases no longer trust the retired one): ``signer`` says what the
DB CA is now, as last known (:func:`ca_mark`), and a certificate cached under another is
issued again for the next connection. Open sessions keep the TLS they were set up with.

The server is verified according to the Resource's ``spec.tls``: ``mode`` ``verify-full``
(default: the chain against ``ca_file`` or Limen's DB CA, and the host name or
``server_name``), ``verify-ca`` (the chain only) or ``insecure`` (nothing; development).

Called by the engines (:mod:`limen.agents.db.postgres_engine`,
:mod:`limen.agents.db.mysql_engine`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from limen.api.resources import Resource
from limen.ca.authority import CertAuthority
from limen.ca.keys import KeyType, generate_private_key, public_key_to_pem
from limen.ca.tls import client_context
from limen.errors import BadParameter
from limen.net.address import parse_address

__all__ = ["CertIssuer", "SignerOf", "UpstreamCerts", "UpstreamTarget", "ca_mark",
           "upstream_target"]

CertIssuer = Callable[[str, str], Awaitable[tuple[bytes, bytes]]]
"""``(db_user, public_key_pem) -> (cert_pem, db_ca_pem)``: auth's ``issue_upstream_cert``."""
SignerOf = Callable[[], str]
"""The DB CA as last known: any text that changes whenever its signing key or its trusted keys
may have (its keys, the signing one first; or the db CA's rotation phase and when it began).
The CA bundle cached with a certificate verifies the database's server certificate, so a
server certificate of the new CA (signed from ``init`` on) is accepted too."""
_RENEW_BEFORE = 600.0


def ca_mark(ca: CertAuthority) -> str:
    """The :data:`SignerOf` text of a DB CA at hand (a db agent in auth's process): the
    ``kid`` of its keys, the signing one first."""
    return " ".join(pair.kid for pair in ca.key_pairs)


@dataclass(frozen=True)
class UpstreamTarget:
    host: str
    port: int
    mode: str
    """verify-full, verify-ca or insecure."""
    ca_file: str
    server_name: str


def upstream_target(db: Resource) -> UpstreamTarget:
    host, port = parse_address(str(db.spec.get("address", "")),
                               5432 if db.spec.get("protocol") == "postgres" else 3306)
    tls = db.spec.get("tls") or {}
    mode = str(tls.get("mode") or ("insecure" if tls.get("insecure_skip_verify")
                                   else "verify-full"))
    return UpstreamTarget(host, port, mode, str(tls.get("ca_file") or ""),
                          str(tls.get("server_name") or host))


@dataclass(frozen=True)
class _Cached:
    expires: float
    cert_pem: bytes
    ca_pem: bytes
    signer: str
    """The signer known when it was asked for (read before asking: a rotation meanwhile
    makes it ask again, never keep a certificate of the retired key)."""


class UpstreamCerts:
    """The agent's key and its upstream certificates per database user (see the module)."""

    def __init__(self, issuer: CertIssuer, *, clock: Callable[[], float] = time.time,
                 signer: SignerOf = lambda: "") -> None:
        self._issuer = issuer
        self._clock = clock
        self._signer = signer
        self._key = generate_private_key(KeyType.ECDSA_P256)
        self._cache: dict[str, _Cached] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.issued = 0
        """How many certificates auth issued to this agent (metrics, tests)."""

    def _usable(self, db_user: str, signer: str) -> _Cached | None:
        cached = self._cache.get(db_user)
        if cached is None or cached.signer != signer or \
                cached.expires - _RENEW_BEFORE <= self._clock():
            return None
        return cached

    async def _cert(self, db_user: str) -> tuple[bytes, bytes]:
        cached = self._usable(db_user, self._signer())
        if cached is not None:
            return cached.cert_pem, cached.ca_pem
        async with self._locks.setdefault(db_user, asyncio.Lock()):
            signer = self._signer()
            cached = self._usable(db_user, signer)
            if cached is not None:
                return cached.cert_pem, cached.ca_pem
            cert_pem, ca_pem = await self._issuer(db_user, public_key_to_pem(
                self._key.public_key()))
            self.issued += 1
            expires = x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.timestamp()
            if len(self._cache) > 1024:
                self._cache.clear()
            self._cache[db_user] = _Cached(expires, cert_pem, ca_pem, signer)
            return cert_pem, ca_pem

    async def context(self, target: UpstreamTarget, db_user: str) -> ssl.SSLContext:
        """A client context presenting ``db_user``'s certificate, verifying per ``target``."""
        cert_pem, db_ca_pem = await self._cert(db_user)
        if target.ca_file:
            try:
                ca_pem = await asyncio.to_thread(Path(target.ca_file).read_bytes)
            except OSError as err:
                raise BadParameter(f"cannot read the database's CA file {target.ca_file}: "
                                   f"{err.strerror}") from None
        else:
            ca_pem = db_ca_pem
        context = client_context(x509.load_pem_x509_certificate(cert_pem), self._key,
                                 x509.load_pem_x509_certificates(ca_pem),
                                 check_hostname=target.mode == "verify-full")
        if target.mode == "insecure":
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
