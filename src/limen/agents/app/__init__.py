"""The app agent: serves internal web applications through its reverse tunnel.

``catalog`` (which apps: the agent's own ``app.apps`` and the app Resources its
``app.resources`` selectors match) and ``app_service`` (the tunnel, the data connections'
mutual TLS, the user's certificate and roles checked again on every connection, then the
bytes of one HTTP exchange relayed to the app). Started by ``limen.cli.compose`` /
``limen.cli.compose_remote``.
"""
