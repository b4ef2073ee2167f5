"""The auth API's HTTP surface: the mutual-TLS app (``app``), one module per route group
(``admin``, ``agents``, ``join``, ``user``, ``trust_root``, ``trust_leaf``), who may call what
(``authz``) and the join listener that asks for no client certificate (``join_listener``).

Handlers call the core (``limen.auth.core.AuthServer`` and the modules beside it); the core
never imports this package (an import-linter contract). Built by ``limen.auth.auth_service``.
"""
