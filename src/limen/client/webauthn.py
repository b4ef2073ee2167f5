"""lmsh's security keys: answer the proxy's WebAuthn options with a FIDO2 key.

Called by ``lmsh login`` (a login's challenge), ``lmsh signup --mfa webauthn`` and
``lmsh mfa add`` (a registration). The options come from auth as JSON (what a browser gives
``navigator.credentials.create/get``); the ``fido2`` library's client builds the client data
with lmsh's origin (``https://`` and the proxy address it talks to, which must be the proxy's
public address: the server accepts that origin only) and talks CTAP2 to the key; the answer
goes back as the same JSON a browser sends.

The keys are the USB FIDO2 keys plugged in (``CtapHidDevice``), or, for tests and automation
only, the software keys named by ``LMSH_WEBAUTHN_DEVICE`` (``limen.client.webauthn_softkey``,
0600 files; several separated by ``:``, as several keys plugged in). A login or a proof uses
the first key holding one of the credentials asked for; a registration the first key that
holds none of the user's (the fido2 client checks both without a touch).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapDevice
from fido2.webauthn import PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions

from limen.errors import AccessDenied, BadParameter, NotFound

__all__ = ["DEVICE_ENV", "assert_key", "open_devices", "register_key"]

DEVICE_ENV = "LMSH_WEBAUTHN_DEVICE"
"""Path of a software security key file (tests and automation only)."""


class _Prompt(UserInteraction):
    def __init__(self, say: Any) -> None:
        self.say = say

    def prompt_up(self) -> None:
        self.say("Touch your security key.")


def open_devices() -> list[CtapDevice]:
    """The software keys of ``LMSH_WEBAUTHN_DEVICE``, else the USB FIDO2 keys."""
    soft = os.environ.get(DEVICE_ENV)
    if soft:
        from limen.client.webauthn_softkey import SoftwareKey

        return [SoftwareKey(Path(p)) for p in soft.split(os.pathsep) if p]
    from fido2.hid import CtapHidDevice

    devices: list[CtapDevice] = list(CtapHidDevice.list_devices())
    if not devices:
        raise NotFound("no FIDO2 security key found: plug one in (lmsh reads /dev/hidraw*)")
    return devices


def _first(proxy: str, say: Any, use: Callable[[Fido2Client], dict[str, Any]],
           ineligible: str) -> dict[str, Any]:
    """``use`` with the first key it suits (a key holding no credential asked for, or one
    already registered, is skipped without a touch)."""
    for device in open_devices():
        client = Fido2Client(device, DefaultClientDataCollector(f"https://{proxy}"),
                             user_interaction=_Prompt(say))
        try:
            return use(client)
        except ClientError as err:
            if err.code != ClientError.ERR.DEVICE_INELIGIBLE:
                raise AccessDenied(f"the security key gave no answer: {err}") from None
        except (ValueError, TypeError, KeyError) as err:
            raise BadParameter(f"the proxy's WebAuthn options are malformed: {err}") from None
    raise AccessDenied(ineligible)


def register_key(proxy: str, options: Mapping[str, Any], say: Any = print) -> dict[str, Any]:
    """The key's answer to creation ``options`` (JSON), as a browser would send it."""
    return _first(proxy, say, lambda client: dict(client.make_credential(
        PublicKeyCredentialCreationOptions.from_dict(options))),
        "every security key found is registered already: plug in a new one")


def assert_key(proxy: str, options: Mapping[str, Any], say: Any = print) -> dict[str, Any]:
    """The key's answer to request ``options`` (JSON), as a browser would send it."""
    return _first(proxy, say, lambda client: dict(client.get_assertion(
        PublicKeyCredentialRequestOptions.from_dict(options)).get_response(0)),
        "no security key found is one of your registered keys (lmsh mfa ls)")
