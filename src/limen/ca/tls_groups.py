"""Restrict the key-exchange groups a TLS context offers to X25519, P-256 and P-384.

Python 3.11's ``ssl`` cannot set a group list: ``SSLContext.set_ecdh_curve`` takes one curve
(and setting it drops X25519). OpenSSL's own ``SSL_CTX_set1_groups_list`` can, so this module
calls it through ``ctypes`` on the ``SSL_CTX`` the context wraps:

* the library is the ``libssl`` already mapped into the process by ``_ssl`` (read from
  ``/proc/self/maps``), so it is the very copy that owns the context;
* the ``SSL_CTX *`` is the first field after the object header of CPython's ``PySSLContext``
  (so since Python 3.6); it is trusted only when ``SSL_CTX_get_options`` on it returns exactly
  ``ctx.options``;
* ``SSL_CTX_set1_groups_list`` is the macro ``SSL_CTX_ctrl(ctx, SSL_CTRL_SET_GROUPS_LIST, 0,
  list)``.

Where any of this does not hold (another interpreter, another OS, a libssl not found),
:func:`restrict_groups` changes nothing, logs why once, and returns False: the context keeps
OpenSSL 3's defaults (X25519, P-256, X448, P-521, P-384 and, for TLS 1.3, the FFDHE groups),
all of them sound. Called by ``limen.ca.tls`` for every context Limen builds.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import ssl
import sys
from typing import Any

__all__ = ["TLS_GROUPS", "restrict_groups"]

log = logging.getLogger(__name__)

TLS_GROUPS = "X25519:P-256:P-384"
"""The key-exchange groups offered and accepted, most preferred first."""
_SSL_CTRL_SET_GROUPS_LIST = 92


@functools.cache
def _libssl() -> Any:
    """The libssl the ``ssl`` module uses, with the two functions typed; None if not found."""
    if sys.implementation.name != "cpython" or not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            paths = [line.split()[-1] for line in maps if "/libssl.so" in line]
    except OSError:
        return None
    if not paths or len(set(paths)) != 1:
        return None
    try:
        lib = ctypes.CDLL(paths[0])
        lib.SSL_CTX_get_options.restype = ctypes.c_uint64
        lib.SSL_CTX_get_options.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_ctrl.restype = ctypes.c_long
        lib.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long,
                                     ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return lib


@functools.cache
def _unavailable(reason: str) -> None:
    log.info("TLS groups left at OpenSSL's defaults: %s", reason)


def restrict_groups(ctx: ssl.SSLContext, groups: str = TLS_GROUPS) -> bool:
    """Make ``ctx`` offer and accept only ``groups``; False (and the defaults) if it cannot."""
    lib = _libssl()
    if lib is None:
        _unavailable("the libssl of the ssl module cannot be reached")
        return False
    pointer = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not pointer or pointer % ctypes.alignment(ctypes.c_void_p):
        _unavailable("unexpected SSLContext layout")
        return False
    if lib.SSL_CTX_get_options(pointer) != ctx.options:
        _unavailable("unexpected SSLContext layout")
        return False
    if lib.SSL_CTX_ctrl(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) != 1:
        _unavailable(f"OpenSSL refused the group list {groups}")
        return False
    return True
