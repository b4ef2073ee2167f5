"""Security headers and request limits for every response and request of the proxy's web port.

Called by ``limen.proxy.web.build_web_app`` (through ``limen.proxy.webui.mount``):

- every response gets a strict Content-Security-Policy, ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer``, ``X-Frame-Options: DENY`` and HSTS;
- a request body larger than :data:`MAX_BODY` is refused with 413 before it is read, and a
  JSON body of the browser's calls (``/v1/webapi/sessions``, ``/v1/webapi/user/``) nested
  deeper than :data:`MAX_DEPTH` with 400 before any handler parses it (every other JSON body
  of the web port is bounded at 64 levels by ``limen.net.http.json_body``).

Two narrow exceptions in the CSP. ``style-src 'unsafe-inline'``: xterm.js's renderer writes its
theme and cell metrics into ``<style>`` elements it creates at run time (no nonce can be given
to them). ``script-src 'wasm-unsafe-eval'``: asciinema-player's terminal emulator is
WebAssembly compiled from the bundle; it allows compiling WebAssembly only, never ``eval`` of
JavaScript, and scripts still come from this origin only, so neither lets injected text run
code.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["CSP", "MAX_BODY", "MAX_DEPTH", "json_depth", "limits_middleware",
           "security_headers"]

MAX_BODY = 64 << 10
MAX_DEPTH = 32
BROWSER_PATHS = ("/v1/webapi/sessions", "/v1/webapi/user/")
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; "
       "style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The headers above on every response of the proxy's own routes, errors included (the
    outermost of its middlewares; an app's responses, routed by Host before it, keep their
    own headers)."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        for name, value in HEADERS.items():
            exc.headers.setdefault(name, value)
        raise
    if not response.prepared:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def json_depth(data: bytes) -> int:
    """The deepest nesting of ``[``/``{`` in JSON text, brackets inside strings ignored."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _refuse(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def limits_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _refuse(413, "bad_parameter", f"request body larger than {MAX_BODY} bytes")
    if request.can_read_body:
        try:
            body = await request.read()  # aiohttp caches it for the handler
        except web.HTTPRequestEntityTooLarge:
            return _refuse(413, "bad_parameter", f"request body larger than {MAX_BODY} bytes")
        if request.path.startswith(BROWSER_PATHS) and json_depth(body) > MAX_DEPTH:
            return _refuse(400, "bad_parameter",
                           f"request body nested more than {MAX_DEPTH} levels deep")
    return await handler(request)
