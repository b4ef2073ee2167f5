"""The proxy's database fronts: PostgreSQL (``postgres_front``) and MySQL (``mysql_front``)
listeners that terminate the client's TLS, authenticate its Limen database certificate,
decide with RBAC and route through the db agent's tunnel (``db_route``); PostgreSQL cancel
keys (``cancel_keys``). Started by ``db_proxy_service`` from ``limen.cli.proxy_component``.
"""
