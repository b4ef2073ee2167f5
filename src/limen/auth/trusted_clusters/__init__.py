"""Trusted clusters, auth's part, one module per side:

    wire.py            what both sides share: CA labels, the handshake's wire format
    root_handshake.py  root side: admit a leaf that presents a ``trusted_cluster`` token
    root_leaves.py     root side: the leaves' connection status and nodes
    leaf_roots.py      leaf side: which roots this cluster trusts, as stored
    ca_update.py       shared: a cluster's public CAs as an update signed by its proxy, in
                       either direction (root to leaf, leaf to root)
    cas_apply.py       shared: such an update checked and stored, replays refused, audited
    leaf_cas.py        leaf side: a root's update applied (a root's CA rotation)
    root_leaf_cas.py   root side: a leaf's own update applied (a leaf's CA rotation)

The HTTP routes are ``limen.auth.http.trust_root`` and ``limen.auth.http.trust_leaf``; the
proxies' parts ``limen.proxy.trust_root_routes`` and ``limen.proxy.trust_leaf_links``; the
leaf's reconciler, handshake client and trust cache ``limen.trust``.
"""
