"""Application access at the proxy: ``https://<app public address>`` on the web port, routed by
``Host`` to the app's agent through its reverse tunnel.

``app_route`` (which app a host names, who the client is, the decision, the identity token,
the data connection to an app agent), ``http_relay`` (one HTTP exchange written to the app
and its answer streamed back; upgrades such as WebSockets relayed both ways), ``app_audit``
(``app.session.start`` once per session, the requests in ``app.session.chunk`` batches) and
``app_front`` (the aiohttp middleware on the web listener and ``/.well-known/jwks.json``).
Installed by ``limen.cli.proxy_component``.
"""
