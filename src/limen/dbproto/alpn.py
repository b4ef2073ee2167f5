"""The ALPN names of the database routes on the proxy's web port (single-port access): the
proxy's :mod:`limen.proxy.db.db_tls_route` serves them, ``lmsh proxy db``
(:mod:`limen.client.db_local_proxy`) asks for them. A connection that negotiated one is TLS
with the user's database certificate from its first byte, so the protocol's own TLS switch
(PostgreSQL's SSLRequest, MySQL's CLIENT_SSL) is skipped.
"""

from __future__ import annotations

__all__ = ["ALPN_BY_PROTOCOL", "ALPN_MYSQL", "ALPN_POSTGRES"]

ALPN_POSTGRES = "limen-postgres"
ALPN_MYSQL = "limen-mysql"
ALPN_BY_PROTOCOL = {"postgres": ALPN_POSTGRES, "mysql": ALPN_MYSQL}
"""The ALPN of each database protocol (the ``spec.protocol`` of a database Resource)."""
