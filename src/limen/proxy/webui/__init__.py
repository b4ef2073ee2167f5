"""The proxy's web UI: the single-page front end under ``/web`` and the browser's API.

``limen.proxy.web.build_web_app`` mounts it (:class:`limen.proxy.webui.mount.WebUI`):
static serving (``static``), security headers and request limits (``guard``), web sessions
kept in the proxy's memory (``sessions``, ``session_api``), the web terminal (``terminal``)
and the recordings' casts (``casts``).
"""
