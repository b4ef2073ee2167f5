"""The logged-in profile's files as the light entry points read them, with the standard library
only: where ``$LIMEN_HOME`` is, a file's bytes, a proxy's directory name, and the profile's
JSON fields (``limen.client.profile``'s layout).

Used by the ProxyCommand's fast path (:mod:`limen.client.proxyssh_command`) and kubectl's exec
plugin (:mod:`limen.client.kube_credentials_fast`). Anything not as expected raises
:class:`NotServed`; the caller then hands the request to the full ``lmsh`` command, which
explains what is wrong.
"""

from __future__ import annotations

import json
import os

__all__ = ["NotServed", "limen_home", "profile_doc", "proxy_dirname", "read"]


class NotServed(Exception):
    """Not served from the files by the fast path: the full command does it."""


def limen_home() -> str:
    """``limen.client.profile.limen_home`` as a string: ``$LIMEN_HOME`` or ``~/.limen``."""
    return os.environ.get("LIMEN_HOME") or os.path.join(os.path.expanduser("~"), ".limen")


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        raise NotServed from None


def proxy_dirname(proxy: str) -> str:
    """``limen.client.profile.proxy_dirname``."""
    return proxy.replace(":", "_").replace("/", "_")


def profile_doc(home: str, proxy: str | None) -> tuple[str, dict[str, object]]:
    """The profile of ``proxy`` (None: the current one) as its proxy and JSON document
    (``ProfileStore.load``/``current``); :class:`NotServed` when it is not JSON (a YAML
    profile: the full command reads it)."""
    if not proxy:
        proxy = read(os.path.join(home, "current-profile")).decode(errors="replace").strip()
    try:
        doc = json.loads(read(os.path.join(home, "profiles", f"{proxy_dirname(proxy)}.yaml")))
    except ValueError:
        raise NotServed from None
    if not isinstance(doc, dict):
        raise NotServed
    return proxy, doc
