"""Trusted clusters, leaf side, in the leaf's processes: role mapping of a root cluster's
identities, the reconciler that performs the handshake with the root and keeps the root's CAs
trusted (or not) as the TrustedCluster resources say, the trust cache, and the poller of
``GET /v1/trust/roots`` for a node or proxy running apart from auth (``roots_poller``), and
the leaf's copy of its roots' locks on root users (``root_locks``, ``root_session_locks``).

What the two sides share and auth's part of each: ``limen.auth.trusted_clusters`` (the root
side of the handshake is ``root_handshake`` there); the leaf proxy's links to its roots:
``limen.proxy.trust_leaf_links``; the root proxy's routes into its leaves:
``limen.proxy.trust_root_routes``. Called by ``limen.cli.compose`` and
``limen.cli.compose_remote``."""
