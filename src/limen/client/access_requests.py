"""The client side of access requests: create, list and review them through the proxy's web
API as the logged-in user, and swap the profile's certificates for ones carrying an approved
request's roles (``lmsh login --request-id`` while logged in).

The new certificates certify the key the profile already holds (the proxy proves possession
in the TLS handshake), so nothing but the certificates is rewritten; ssh-agent gets the new
certificate. Called by ``limen.cli.lmsh_requests`` and ``limen.cli.lmsh``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi

__all__ = ["create_request", "list_requests", "login_with_request", "review_request",
           "save_answer"]


async def _as_user(store: ProfileStore, profile: Profile, path: str,
                   body: dict[str, Any] | None = None) -> Any:
    api = WebApi.for_profile(store, profile)
    try:
        if body is None:
            return await api.as_user(path)
        return await api.as_user_post(path, body)
    finally:
        await api.close()


async def create_request(store: ProfileStore, profile: Profile, roles: Sequence[str],
                         reason: str) -> dict[str, Any]:
    answer: dict[str, Any] = await _as_user(store, profile, "requests",
                                            {"roles": list(roles), "reason": reason})
    return answer


async def list_requests(store: ProfileStore, profile: Profile) -> list[dict[str, Any]]:
    answer = await _as_user(store, profile, "requests")
    return list(answer["items"])


async def review_request(store: ProfileStore, profile: Profile, request_id: str,
                         approve: bool, reason: str) -> dict[str, Any]:
    answer: dict[str, Any] = await _as_user(
        store, profile, f"requests/{quote(request_id, safe='')}/review",
        {"state": "approved" if approve else "denied", "reason": reason})
    return answer


async def login_with_request(store: ProfileStore, profile: Profile, request_id: str,
                             ttl_seconds: int | None) -> Profile:
    """New certificates for the profile's key with the request's roles; the profile updated."""
    body: dict[str, Any] = {"ttl_seconds": ttl_seconds} if ttl_seconds else {}
    answer = await _as_user(store, profile, f"requests/{quote(request_id, safe='')}/certs",
                            body)
    key_path = store.key_path(profile.proxy, profile.user)
    public = key_path.with_name(f"{profile.user}.pub").read_bytes()
    return await save_answer(store, profile.proxy, profile.ssh_proxy, answer,
                             key_path.read_bytes(), public)


async def save_answer(store: ProfileStore, proxy: str, ssh_proxy: str, answer: dict[str, Any],
                      private: bytes, public: bytes) -> Profile:
    """Write a login answer (certificates, CAs) for ``private`` and load it into ssh-agent."""
    profile = Profile(proxy=proxy, user=answer["user"], cluster=answer["cluster"],
                      expires=answer["expires"], roles=tuple(answer["roles"]),
                      logins=tuple(answer["logins"]), ssh_proxy=ssh_proxy)
    store.save_login(
        profile, private_key=private, public_key=public,
        ssh_cert=(answer["ssh_cert"] + "\n").encode(), tls_cert=answer["tls_cert"].encode(),
        tls_cas={c: pem.encode() for c, pem in answer["tls_cas"].items()},
        host_ca_lines=answer["known_hosts"])
    from limen.client.sshagent import add_to_agent  # asyncssh: loaded only when used

    lifetime = int((profile.expires_at - datetime.now(UTC)).total_seconds())
    await add_to_agent(private, answer["ssh_cert"].encode(), max(lifetime, 1))
    return profile
