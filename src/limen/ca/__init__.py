"""Certificate authority: key generation, SSH and X.509 certificate issuance and verification.

Pure code, no network and no storage: auth keeps the :class:`CertAuthority` records in its
backend and calls the signers; the proxy, the agents and ``lmsh`` call the verifiers and the
TLS context factories. Modules, bottom up::

    keys          key generation, OpenSSH/PEM encodings, fingerprints, pins, JWKs
    identity      Identity: who a certificate speaks for (JSON inside both cert types)
    authority     CertAuthority records (user, host, tls, db, jwt), rotation, export
    ssh_certs     OpenSSH user/host certificates: sign, verify
    x509_certs    X.509 client/server certificates: sign, verify
    tls           ssl.SSLContext factories (TLS 1.2+, in-memory material)
    jwt           app-access JWTs (EdDSA / ES256) and their verification
"""

from limen.ca.authority import (
    CAKeyPair,
    CertAuthority,
    CertAuthorityType,
    ssh_trust_map,
    tls_trust_map,
)
from limen.ca.identity import Identity, RouteToDatabase, SystemRole
from limen.ca.jwt import issue_app_token, sign_jwt, verify_jwt
from limen.ca.keys import (
    KeyType,
    PrivateKey,
    PublicKey,
    generate_private_key,
    load_private_key,
    load_public_key,
    pin_matches,
    private_key_to_openssh,
    private_key_to_pem,
    public_key_to_openssh,
    public_key_to_pem,
    spki_pin,
    ssh_fingerprint,
)
from limen.ca.ssh_certs import (
    NO_LOGIN_PRINCIPAL,
    sign_host_cert,
    sign_user_cert,
    verify_ssh_host_cert,
    verify_ssh_user_cert,
)
from limen.ca.tls import client_context, server_context
from limen.ca.x509_certs import (
    IDENTITY_OID,
    certificate_to_pem,
    load_certificate,
    sign_client_cert,
    sign_server_cert,
    verify_client_cert,
)

__all__ = [
    "IDENTITY_OID",
    "NO_LOGIN_PRINCIPAL",
    "CAKeyPair",
    "CertAuthority",
    "CertAuthorityType",
    "Identity",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "RouteToDatabase",
    "SystemRole",
    "certificate_to_pem",
    "client_context",
    "generate_private_key",
    "issue_app_token",
    "load_certificate",
    "load_private_key",
    "load_public_key",
    "pin_matches",
    "private_key_to_openssh",
    "private_key_to_pem",
    "public_key_to_openssh",
    "public_key_to_pem",
    "server_context",
    "sign_client_cert",
    "sign_host_cert",
    "sign_jwt",
    "sign_server_cert",
    "sign_user_cert",
    "spki_pin",
    "ssh_fingerprint",
    "ssh_trust_map",
    "tls_trust_map",
    "verify_client_cert",
    "verify_jwt",
    "verify_ssh_host_cert",
    "verify_ssh_user_cert",
]
