"""``lmsh apps``'s conversation with the proxy and the files it keeps.

* :func:`list_apps` — ``GET /v1/webapi/user/apps``: the online apps the caller's roles admit,
  with their public addresses.
* :func:`login_app` — checks the app is listed, gets the app certificate from
  ``POST /v1/webapi/user/apps/certs`` (the login key's, scoped to the app) and writes it with
  the key (PKCS#8 PEM, which curl reads) and what :func:`curl_flags` needs.
* :func:`curl_flags` — ``--cert``, ``--key``, ``--cacert`` (the cluster's TLS CA) and the
  app's URL on the proxy's web port.

Files: ``keys/<proxy>/<user>-app/<cluster>/<name>.{crt,key,json}`` (0600). Called by
``limen.cli.lmsh_apps``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography import x509

from limen.ca.keys import load_private_key, private_key_to_pem
from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi
from limen.errors import BadParameter, NotFound
from limen.files import write_private

__all__ = ["app_dir", "curl_flags", "forget_apps", "list_apps", "logged_in_apps", "login_app"]


def app_dir(store: ProfileStore, profile: Profile) -> Path:
    return store.key_dir(profile.proxy) / f"{profile.user}-app" / profile.cluster


def _check(name: str) -> str:
    if not name or name.startswith(".") or any(
            c in "/\\" or ord(c) < 0x21 or ord(c) == 0x7F for c in name):
        raise BadParameter(f"invalid app name {name!r}")
    return name


def logged_in_apps(store: ProfileStore, profile: Profile) -> list[str]:
    folder = app_dir(store, profile)
    return sorted(p.stem for p in folder.glob("*.crt")) if folder.is_dir() else []


def forget_apps(store: ProfileStore, profile: Profile, names: list[str] | None = None
                ) -> list[str]:
    """Remove the files of ``names`` (default: every app logged in to); the apps removed."""
    names = logged_in_apps(store, profile) if names is None else names
    removed = []
    for name in names:
        base = app_dir(store, profile) / _check(name)
        if base.with_suffix(".crt").exists():
            removed.append(name)
        for suffix in (".crt", ".key", ".json"):
            base.with_suffix(suffix).unlink(missing_ok=True)
    return removed


async def list_apps(api: WebApi) -> list[dict[str, Any]]:
    answer = await api.as_user("apps")
    return list(answer["items"])


def _url(public_addr: str, proxy: str) -> str:
    port = proxy.rpartition(":")[2] if ":" in proxy else "443"
    return f"https://{public_addr}/" if port == "443" else f"https://{public_addr}:{port}/"


async def login_app(store: ProfileStore, profile: Profile, name: str) -> dict[str, Any]:
    """Log in to app ``name`` (see the module); returns what :func:`curl_flags` reads."""
    base = app_dir(store, profile) / _check(name)
    api = WebApi.for_profile(store, profile)
    try:
        found = next((i for i in await list_apps(api) if i.get("name") == name), None)
        if found is None:
            raise NotFound(f"no app {name!r} you may use is online (see lmsh apps ls)")
        answer = await api.as_user_post("apps/certs", {"app": name})
    finally:
        await api.close()
    pem = str(answer["cert"]).encode()
    try:
        x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise BadParameter("the app certificate received is not a PEM certificate") from None
    key = load_private_key(store.key_path(profile.proxy, profile.user).read_bytes())
    write_private(base.with_suffix(".key"), private_key_to_pem(key).encode())
    write_private(base.with_suffix(".crt"), pem)
    info = {"name": name, "url": _url(str(found["public_addr"]), profile.proxy),
            "expires": answer["expires"]}
    write_private(base.with_suffix(".json"), json.dumps(info).encode())
    return info


def curl_flags(store: ProfileStore, profile: Profile, name: str) -> list[str]:
    """The curl arguments that reach app ``name`` (NotFound before ``lmsh apps login``)."""
    base = app_dir(store, profile) / _check(name)
    try:
        info = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise NotFound(f"not logged in to app {name}: run lmsh apps login {name}") from None
    return ["--cert", str(base.with_suffix(".crt")), "--key", str(base.with_suffix(".key")),
            "--cacert", str(store.ca_path(profile.proxy, profile.cluster)), str(info["url"])]
