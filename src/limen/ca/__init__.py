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

The package imports none of them: a caller imports the modules it needs and pays for no
other (``lmctl``, which opens a TLS connection to auth, loads neither ``ssh_certs`` nor ``jwt``).
"""
