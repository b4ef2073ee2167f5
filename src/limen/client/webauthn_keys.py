"""The logged-in user's second factors through the proxy (``/v1/webapi/user/mfa...``): list,
register a security key (the proxy's options answered by the key, ``limen.client.webauthn``),
remove. Adding and removing need the proof of a second factor the user has already: a
registered key's answer to a ``confirm`` challenge, else the authenticator app's current code
(``ask_code``). Called by ``lmsh mfa`` (``limen.cli.lmsh_mfa``); auth decides and audits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi
from limen.client.webauthn import assert_key, register_key

__all__ = ["add_key", "list_factors", "remove_factor"]

AskCode = Callable[[], str]
Say = Callable[[str], None]


async def _proof(api: WebApi, proxy: str, otp: str, ask_code: AskCode,
                 say: Say) -> dict[str, Any] | None:
    """A proof of a second factor the user has: ``otp`` when given, else a registered key,
    else the app's code asked for; None when the user has none yet."""
    if otp:
        return {"otp": otp}
    confirm = await api.as_user_post("mfa/confirm/begin", {})
    if confirm.get("webauthn"):
        say("Confirm with one of your registered security keys.")
        return {"webauthn": await asyncio.to_thread(assert_key, proxy, confirm["webauthn"],
                                                    say)}
    if confirm.get("otp"):
        return {"otp": await asyncio.to_thread(ask_code)}
    return None


async def list_factors(store: ProfileStore, profile: Profile) -> list[dict[str, Any]]:
    api = WebApi.for_profile(store, profile)
    try:
        items: list[dict[str, Any]] = (await api.as_user("mfa"))["items"]
        return items
    finally:
        await api.close()


async def add_key(store: ProfileStore, profile: Profile, name: str, *, otp: str,
                  ask_code: AskCode, say: Say) -> dict[str, Any]:
    """Register a new security key (a USB key, or ``LMSH_WEBAUTHN_DEVICE``) as ``name``."""
    api = WebApi.for_profile(store, profile)
    try:
        proof = await _proof(api, profile.proxy, otp, ask_code, say)
        begun = await api.as_user_post("mfa/register/begin", {"name": name})
        say(f"Now the new key {name}.")
        answer = await asyncio.to_thread(register_key, profile.proxy, begun["webauthn"], say)
        added: dict[str, Any] = await api.as_user_post(
            "mfa/register", {"name": name, "webauthn": answer, "proof": proof})
        return added
    finally:
        await api.close()


async def remove_factor(store: ProfileStore, profile: Profile, name: str, *, otp: str,
                        ask_code: AskCode, say: Say) -> dict[str, Any]:
    api = WebApi.for_profile(store, profile)
    try:
        proof = await _proof(api, profile.proxy, otp, ask_code, say)
        removed: dict[str, Any] = await api.as_user_post("mfa/remove",
                                                         {"name": name, "proof": proof})
        return removed
    finally:
        await api.close()
