"""lmsh's security keys: answer the proxy's WebAuthn options with a FIDO2 key.

Called by ``lmsh login`` (a login's challenge), ``lmsh signup --mfa webauthn`` and
``lmsh mfa add`` (a registration). The options come from auth as JSON (what a browser gives
``navigator.credentials.create/get``); the ``fido2`` library's client builds the client data
with lmsh's origin (``https://`` and the proxy address it talks to, which must be the proxy's
public address: the server accepts that origin only) and talks CTAP2 to the key; the answer
goes back as the same JSON a browser sends.

The key is the first USB FIDO2 key (``CtapHidDevice``), or, for tests and automation only, the
software key named by ``LMSH_WEBAUTHN_DEVICE`` (``limen.client.webauthn_softkey``, a 0600 file).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fido2.client import ClientError, DefaultClientDataCollector, Fido2Client, UserInteraction
from fido2.ctap import CtapDevice
from fido2.webauthn import PublicKeyCredentialCreationOptions, PublicKeyCredentialRequestOptions

from limen.errors import AccessDenied, BadParameter, NotFound

__all__ = ["DEVICE_ENV", "assert_key", "open_device", "register_key"]

DEVICE_ENV = "LMSH_WEBAUTHN_DEVICE"
"""Path of a software security key file (tests and automation only)."""


class _Prompt(UserInteraction):
    def __init__(self, say: Any) -> None:
        self.say = say

    def prompt_up(self) -> None:
        self.say("Touch your security key.")


def open_device() -> CtapDevice:
    """The software key of ``LMSH_WEBAUTHN_DEVICE``, else the first USB FIDO2 key."""
    soft = os.environ.get(DEVICE_ENV)
    if soft:
        from limen.client.webauthn_softkey import SoftwareKey

        return SoftwareKey(Path(soft))
    from fido2.hid import CtapHidDevice

    device = next(iter(CtapHidDevice.list_devices()), None)
    if device is None:
        raise NotFound("no FIDO2 security key found: plug one in (lmsh reads /dev/hidraw*)")
    return device


def _client(proxy: str, say: Any) -> Fido2Client:
    return Fido2Client(open_device(), DefaultClientDataCollector(f"https://{proxy}"),
                       user_interaction=_Prompt(say))


def register_key(proxy: str, options: Mapping[str, Any], say: Any = print) -> dict[str, Any]:
    """The key's answer to creation ``options`` (JSON), as a browser would send it."""
    try:
        response = _client(proxy, say).make_credential(
            PublicKeyCredentialCreationOptions.from_dict(options))
    except ClientError as err:
        raise AccessDenied(f"the security key refused to register: {err}") from None
    except (ValueError, TypeError, KeyError) as err:
        raise BadParameter(f"the proxy's registration options are malformed: {err}") from None
    return dict(response)


def assert_key(proxy: str, options: Mapping[str, Any], say: Any = print) -> dict[str, Any]:
    """The key's answer to request ``options`` (JSON), as a browser would send it."""
    try:
        selection = _client(proxy, say).get_assertion(
            PublicKeyCredentialRequestOptions.from_dict(options))
    except ClientError as err:
        if err.code == ClientError.ERR.DEVICE_INELIGIBLE:
            raise AccessDenied("this security key is not one of your registered keys "
                               "(lmsh mfa ls)") from None
        raise AccessDenied(f"the security key gave no answer: {err}") from None
    except (ValueError, TypeError, KeyError) as err:
        raise BadParameter(f"the proxy's login options are malformed: {err}") from None
    return dict(selection.get_response(0))
