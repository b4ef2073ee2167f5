"""Certificate authority: key generation, SSH and X.509 certificate issuance and verification."""
