"""The db agent: serves PostgreSQL and MySQL/MariaDB databases through its reverse tunnel.

``catalog`` (which databases), ``upstream_tls`` (the client certificates it logs in with),
``session`` (one proxied session's identity, decision and audit), ``postgres_engine`` and
``mysql_engine`` (the protocols), ``db_service`` (the tunnel, the data connections' mutual
TLS, dispatch). Started by ``limen.cli.compose`` / ``limen.cli.compose_remote``.
"""
