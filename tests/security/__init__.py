"""Security tests: attacks on real clusters, one row each in the security tests index of
THREAT_MODEL.md."""
