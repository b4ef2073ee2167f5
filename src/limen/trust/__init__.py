"""Trusted clusters, leaf side: role mapping of a root cluster's identities and the reconciler
that performs the handshake with the root and keeps the root's CAs trusted (or not) as the
TrustedCluster resources say. The root side of the handshake is ``limen.auth.trusted_root``.
Called by ``limen.cli.process``."""
