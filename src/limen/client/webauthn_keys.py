"""The logged-in user's second factors through the proxy (``/v1/webapi/user/mfa...``): list,
register a security key (the proxy's options answered by the key, ``limen.client.webauthn``),
remove. Called by ``lmsh mfa`` (``limen.cli.lmsh_mfa``); auth decides and audits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi
from limen.client.webauthn import register_key

__all__ = ["add_key", "list_factors", "remove_factor"]


async def list_factors(store: ProfileStore, profile: Profile) -> list[dict[str, Any]]:
    api = WebApi.for_profile(store, profile)
    try:
        items: list[dict[str, Any]] = (await api.as_user("mfa"))["items"]
        return items
    finally:
        await api.close()


async def add_key(store: ProfileStore, profile: Profile, name: str,
                  say: Callable[[str], None]) -> dict[str, Any]:
    """Register the security key (the USB key, or ``LMSH_WEBAUTHN_DEVICE``) as ``name``."""
    api = WebApi.for_profile(store, profile)
    try:
        begun = await api.as_user_post("mfa/register/begin", {"name": name})
        answer = await asyncio.to_thread(register_key, profile.proxy, begun["webauthn"], say)
        added: dict[str, Any] = await api.as_user_post("mfa/register",
                                                       {"name": name, "webauthn": answer})
        return added
    finally:
        await api.close()


async def remove_factor(store: ProfileStore, profile: Profile, name: str) -> dict[str, Any]:
    api = WebApi.for_profile(store, profile)
    try:
        removed: dict[str, Any] = await api.as_user_post("mfa/remove", {"name": name})
        return removed
    finally:
        await api.close()
