"""The single-page front end under ``/web``: ``index.html`` for every ``/web/*`` path the
bundle does not hold (the page routes itself), never cached; hashed files under
``/web/assets/`` cached for a year. The bundle is ``dist/`` next to this module, built from
``web/`` by ``npm run build`` (``scripts/start`` and ``scripts/test`` build it when missing or
older than its sources). Mounted by ``limen.proxy.webui.mount``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["DIST", "static_routes"]

DIST = Path(__file__).with_name("dist")
_NOT_BUILT = ("The web UI is not built on this proxy: run `npm ci && npm run build` in web/ "
              "(scripts/start does it).\n")


def _asset(dist: Path, tail: str) -> Path | None:
    """The bundle file ``tail`` names, or None (never a path outside ``dist``)."""
    if not tail or "\\" in tail or any(part in ("", ".", "..") for part in tail.split("/")):
        return None
    path = (dist / tail).resolve()
    root = dist.resolve()
    if root not in path.parents or not path.is_file():
        return None
    return path


def static_routes(dist: Path = DIST) -> list[web.RouteDef]:

    async def page(request: web.Request) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        asset = _asset(dist, tail)
        if asset is not None:
            response = web.FileResponse(asset)
            immutable = tail.startswith("assets/")
            response.headers["Cache-Control"] = ("public, max-age=31536000, immutable"
                                                 if immutable else "no-cache")
            return response
        index = dist / "index.html"
        if not index.is_file():
            return web.Response(status=503, text=_NOT_BUILT,
                                headers={"Cache-Control": "no-store"})
        return web.Response(body=index.read_bytes(), content_type="text/html",
                            charset="utf-8", headers={"Cache-Control": "no-store"})

    async def root(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/web/")

    return [web.get("/", root), web.get("/web", page), web.get("/web/{tail:.*}", page)]
