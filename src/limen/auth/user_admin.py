"""What ``lmctl users ls|update|reset|unlock`` do on the auth server (like ``tctl users``).

The User resource (roles, traits) belongs to its origin: ``update`` changes only users made
with lmctl or the API, and refuses users owned by Git or Kubernetes with where to change them
(``limen.services.ownership``). ``reset`` and ``unlock`` touch only auth's own secrets of the
user (``/secrets/credentials/<user>``), so they work whatever the origin, like ``invite``.
Every change is audited as ``user.update`` (with ``action``), refusals with success false.
Called by ``limen.auth.http.admin`` and by ``limen.cli.admin_local`` (offline ``lmctl``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Origin, Resource
from limen.api.validation import validate
from limen.auth.core import AuthServer
from limen.auth.credentials.local_users import CREDENTIALS_PREFIX, SIGNUP_PREFIX
from limen.auth.credentials.login import LocalCredentials
from limen.auth.credentials.signup_tokens import SignupToken, build_signup_url
from limen.auth.issuer import user_traits
from limen.backend.base import Condition, Delete, Put
from limen.errors import CompareFailed, LimenError
from limen.services.ownership import check_owner

__all__ = ["list_users", "remove_user", "reset_user", "unlock_user", "update_user", "user_row"]


def user_row(user: Resource, creds: LocalCredentials | None, now: float) -> dict[str, Any]:
    """One line of ``lmctl users ls``: the user, its origin, and its sign-up and lock state."""
    traits = user_traits(user)
    locked = bool(creds and creds.locked_until and creds.locked_until > now)
    return {
        "name": user.name, "roles": list(user.spec.get("roles") or []),
        "logins": list(traits.get("logins") or []), "origin": user.origin or "-",
        "signed_up": bool(creds and creds.has_password),
        "totp": bool(creds and creds.has_totp),
        "locked": locked, "locked_until": creds.locked_until if locked and creds else None,
    }


async def _credentials(auth: AuthServer, name: str) -> LocalCredentials | None:
    item = await auth.backend.get(CREDENTIALS_PREFIX + name)
    return None if item is None else LocalCredentials.from_dict(json.loads(item.value))


async def list_users(auth: AuthServer) -> list[dict[str, Any]]:
    now = auth.clock()
    return [user_row(user, await _credentials(auth, user.name), now)
            for user in sorted(await auth.store.list(Kind.USER), key=lambda u: u.name)]


async def _refused(auth: AuthServer, actor: str, name: str, action: str,
                   err: LimenError) -> LimenError:
    await auth.emit("user.update", success=False, user=actor, name=name, action=action,
                    reason=str(err))
    return err


async def update_user(auth: AuthServer, name: str, *, actor: str,
                      roles: Sequence[str] | None = None,
                      logins: Sequence[str] | None = None) -> dict[str, Any]:
    """Replace the user's roles and/or logins (``--set-roles``, ``--set-logins``)."""
    current = await auth.store.get(Kind.USER, name)
    try:
        check_owner(current, Origin.API, "update")
        for role in roles or ():
            await auth.store.get(Kind.ROLE, role)
    except LimenError as err:
        raise await _refused(auth, actor, name, "update", err) from None
    spec = dict(current.spec)
    if roles is not None:
        spec["roles"] = list(roles)
    if logins is not None:
        traits = dict(spec.get("traits") or {})
        traits["logins"] = list(logins)
        spec["traits"] = traits
    document = current.replace(spec=spec).to_document(with_status=False)
    document["metadata"].pop("resourceVersion", None)
    (desired,) = validate([SourceDocument(f"<users update {name}>", 0, 1, document)])
    updated = await auth.store.update(
        desired.with_origin(current.origin or Origin.API).replace(
            status=current.status, revision=current.revision))
    await auth.emit("user.update", user=actor, name=name, action="update",
                    roles=list(updated.spec.get("roles") or []),
                    logins=list(user_traits(updated).get("logins") or []))
    return user_row(updated, await _credentials(auth, name), auth.clock())


async def remove_user(auth: AuthServer, name: str, *, actor: str) -> None:
    """Delete a user made with lmctl or the API, and its secrets; a user owned by Git or
    Kubernetes is refused (audited) with where to delete it instead."""
    current = await auth.store.get(Kind.USER, name)
    try:
        check_owner(current, Origin.API, "delete")
    except LimenError as err:
        await auth.emit("user.delete", success=False, user=actor, name=name, reason=str(err))
        raise
    await auth.remove(Kind.USER, name, Origin.API, actor=actor)


async def reset_user(auth: AuthServer, name: str, *, actor: str,
                     ttl_seconds: float = 3600.0) -> str:
    """Clear the user's password and TOTP, void its unused sign-up links, and return a new
    one-time sign-up link (``tctl users reset``)."""
    await auth.store.get(Kind.USER, name)
    proxy, pin = await auth.signup_prerequisites()
    for item in await auth.backend.list(SIGNUP_PREFIX):
        try:
            record = SignupToken.from_dict(json.loads(item.value))
        except (ValueError, LimenError):
            continue
        if record.user == name and not record.used:
            try:
                await auth.backend.delete(item.key, expected_revision=item.revision)
            except LimenError:
                continue  # used or expired meanwhile
    key = CREDENTIALS_PREFIX + name
    current = await auth.backend.get(key)
    if current is not None:
        await auth.backend.atomic([Condition(key, current.revision)], [Delete(key)])
    secret = await auth.users.invite(name, ttl_seconds)
    await auth.emit("user.update", user=actor, name=name, action="reset")
    return build_signup_url(proxy, secret, pin)


async def unlock_user(auth: AuthServer, name: str, *, actor: str) -> bool:
    """Clear a login lockout and the failures counting towards one; True if it was locked."""
    await auth.store.get(Kind.USER, name)
    key = CREDENTIALS_PREFIX + name
    for _ in range(5):
        item = await auth.backend.get(key)
        if item is None:
            break
        creds = LocalCredentials.from_dict(json.loads(item.value))
        was_locked = bool(creds.locked_until and creds.locked_until > auth.clock())
        if not creds.failures and creds.locked_until is None:
            break
        cleared = LocalCredentials.from_dict(
            {**creds.to_dict(), "failures": [], "locked_until": None, "updated": auth.clock()})
        try:
            await auth.backend.atomic([Condition(key, item.revision)],
                                      [Put(key, json.dumps(cleared.to_dict()).encode())])
        except CompareFailed:
            continue  # a login wrote meanwhile: read again
        await auth.emit("user.update", user=actor, name=name, action="unlock",
                        was_locked=was_locked)
        return was_locked
    await auth.emit("user.update", user=actor, name=name, action="unlock", was_locked=False)
    return False
