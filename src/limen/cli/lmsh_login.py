"""Where ``lmsh login`` logs in when flags are left out, and the check of its ``--ca-pin``.

Like ``tsh login``: with no ``--proxy`` the current profile's proxy and user are used again;
``--proxy`` alone takes the user of that proxy's saved profile. Called by ``limen.cli.lmsh``.
"""

from __future__ import annotations

import re

from limen.client.profile import ProfileStore
from limen.errors import BadParameter, NotFound

__all__ = ["check_pin_format", "login_target"]

_PIN = re.compile(r"sha256:[0-9a-f]{64}")


def login_target(store: ProfileStore, proxy: str | None, user: str | None) -> tuple[str, str]:
    """The (proxy, user) to log in as: the flags, completed from the saved profiles."""
    if proxy and user:
        return proxy, user
    try:
        saved = store.load(proxy) if proxy else store.current()
    except NotFound:
        if proxy:
            raise BadParameter(f"no saved profile for {proxy}: "
                               f"run lmsh login --proxy {proxy} --user NAME") from None
        raise BadParameter("no saved profile to log in again: "
                           "run lmsh login --proxy HOST:PORT --user NAME") from None
    return saved.proxy, user or saved.user


def check_pin_format(pin: str) -> None:
    """``BadParameter`` unless ``pin`` is ``sha256:`` and 64 hex digits (``lmctl status``)."""
    if not _PIN.fullmatch(pin.strip().lower()):
        raise BadParameter("--ca-pin must be 'sha256:' followed by 64 hex digits "
                           "(lmctl status shows the cluster's TLS CA pin)")
