"""``lmsh kube``'s conversation with the proxy and the files it keeps.

* :func:`list_kube_clusters` — ``GET /v1/webapi/user/kube/clusters``: the online kube
  clusters the caller's roles admit, with the groups and users granted there.
* :func:`login_kube` — checks the cluster is listed, finds the kube front in the proxy's
  ping (:func:`kube_front`: its ``kube`` listener when published, else the web port with the
  kube front's server name), gets a certificate (:func:`fetch_credentials`) and merges the
  kubeconfig entry (:mod:`limen.client.kubeconfig`).
* :func:`credentials` — what ``lmsh kube credentials`` prints for kubectl
  (:func:`print_credentials`): the saved kube certificate while it lives more than a minute,
  is the profile user's for that kube cluster and leaf and matches the current login key,
  else a fresh one from ``POST /v1/webapi/user/kube/certs``; with the login key as PKCS#8
  PEM. The exec plugin the kubeconfig names, ``limen.client.kube_credentials_main``, serves
  the saved certificate without cryptography (``limen.client.kube_credentials_fast``, the
  same checks) and calls :func:`print_credentials` for anything else.

* :func:`login_all_kube` — ``lmsh kube login --all``: one certificate that names no kube
  cluster (``POST kube/certs {any_cluster: true}``) and one kubeconfig entry per kube cluster
  listed, each server URL naming its cluster (the proxy routes by the path); the exec plugin
  is ``kube credentials --all``.

A trusted leaf cluster's kube cluster (``lmsh kube login --cluster LEAF NAME``) goes through
the same proxy: listed by the leaf, its certificate routed there, its files under ``LEAF``,
its kubeconfig context ``LEAF-NAME``.

Files: ``keys/<proxy>/<user>-kube/<cluster>/<name>.crt`` (0600); with ``--all``
``keys/<proxy>/<user>-kube-any/<cluster>.crt`` and the contexts it wrote,
``<cluster>.contexts`` (``lmsh kube logout`` removes them). Called by
``limen.cli.lmsh_kube`` and ``limen.client.kube_credentials_fast`` (its full path).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from limen.ca.keys import load_private_key, private_key_to_pem
from limen.ca.x509_certs import identity_from_cert
from limen.client.db_access import listener_address
from limen.client.kube_credentials_fast import (
    RENEW_MARGIN_SECONDS,
    exec_command,
    exec_credential_doc,
)
from limen.client.kubeconfig import (
    KubeEntry,
    context_name,
    kubeconfig_path,
    merge_entry,
    remove_entries,
)
from limen.client.profile import Profile, ProfileStore, limen_home
from limen.client.webapi import WebApi
from limen.errors import BadParameter, ConnectionProblem, NotFound
from limen.files import write_private
from limen.net.address import parse_address

__all__ = [
    "ExecCredential",
    "cert_path",
    "credentials",
    "exec_credential",
    "forget_kube_clusters",
    "kube_front",
    "list_kube_clusters",
    "logged_in_clusters",
    "login_all_kube",
    "login_kube",
    "print_credentials",
]

_RENEW_MARGIN = timedelta(seconds=RENEW_MARGIN_SECONDS)


@dataclass(frozen=True)
class ExecCredential:
    cert_pem: bytes
    key_pem: bytes
    expires: datetime


def cert_path(store: ProfileStore, profile: Profile, name: str, leaf: str = "") -> Path:
    if not name or name.startswith(".") or any(
            c in "/\\" or ord(c) < 0x21 or ord(c) == 0x7F for c in name):
        raise BadParameter(f"invalid kube cluster name {name!r}")
    if leaf.startswith(".") or any(c in "/\\" or ord(c) < 0x21 for c in leaf):
        raise BadParameter(f"invalid cluster name {leaf!r}")
    return store.key_dir(profile.proxy) / f"{profile.user}-kube" / (leaf or profile.cluster) \
        / f"{name}.crt"


def any_cert_path(store: ProfileStore, profile: Profile) -> Path:
    """The certificate naming no kube cluster (``lmsh kube login --all``)."""
    return store.key_dir(profile.proxy) / f"{profile.user}-kube-any" / f"{profile.cluster}.crt"


def logged_in_clusters(store: ProfileStore, profile: Profile) -> list[str]:
    folder = store.key_dir(profile.proxy) / f"{profile.user}-kube" / profile.cluster
    return sorted(p.stem for p in folder.glob("*.crt")) if folder.is_dir() else []


def forget_kube_clusters(store: ProfileStore, profile: Profile, names: list[str] | None = None,
                         env: Mapping[str, str] | None = None) -> list[str]:
    """Remove the certificates of ``names`` (default: every kube cluster logged in to) and
    their kubeconfig entries; the contexts removed."""
    contexts: list[str] = []
    if names is None:
        names = logged_in_clusters(store, profile)
        any_cert = any_cert_path(store, profile)
        listing = any_cert.with_suffix(".contexts")
        if listing.is_file():
            contexts = [c for c in listing.read_text(encoding="utf-8").splitlines() if c]
        any_cert.unlink(missing_ok=True)
        listing.unlink(missing_ok=True)
    for name in names:
        cert_path(store, profile, name).unlink(missing_ok=True)
    return remove_entries(kubeconfig_path(os.environ if env is None else env),
                          [*contexts, *(context_name(profile.cluster, n) for n in names)])


async def list_kube_clusters(api: WebApi, leaf: str = "") -> list[dict[str, Any]]:
    """``leaf``: a trusted leaf cluster's kube clusters (the leaf answers)."""
    answer = await api.as_user("kube/clusters", {"cluster": leaf} if leaf else None)
    return list(answer["items"])


def _lmsh_command() -> str:
    found = shutil.which("lmsh")
    if found:
        return str(Path(found).resolve())
    return str(Path(sys.argv[0]).resolve())


def kube_front(ping: Mapping[str, Any], proxy: str) -> tuple[str, int, str]:
    """Where kubectl reaches the proxy's kube front, from the proxy's ping: host, port and the
    TLS server name to send (empty: the host). Its ``kube`` listener when the ping announces
    one (as ``tsh`` uses a published kube port), else the web port the profile uses, ``proxy``,
    with the server name the web port routes to the kube front (single-port mode)."""
    try:
        host, port = listener_address(ping, "kube", proxy)
    except ConnectionProblem:
        name = ping.get("kube_server_name")
        if not isinstance(name, str) or not name:
            raise ConnectionProblem(f"the proxy {proxy} announces no kube listener and does "
                                    "not serve kubectl on its web port: Kubernetes access is "
                                    "not served there") from None
        host, port = parse_address(proxy, 443)
        return host, port, name
    return host, port, ""


async def login_kube(store: ProfileStore, profile: Profile, name: str, *,
                     env: Mapping[str, str] | None = None, leaf: str = ""
                     ) -> tuple[KubeEntry, Path]:
    """Log in to kube cluster ``name`` (of trusted leaf cluster ``leaf``): a certificate on
    disk and the kubeconfig entry; returns the entry and the kubeconfig written."""
    leaf = leaf if leaf != profile.cluster else ""
    api = WebApi.for_profile(store, profile)
    try:
        items = await list_kube_clusters(api, leaf)
        if not any(i.get("name") == name for i in items):
            raise NotFound(f"no kube cluster {name!r} you may use is online (see lmsh kube ls)")
        front = kube_front(await api.ping(), profile.proxy)
        await _fetch(api, store, profile, name, leaf)
    finally:
        await api.close()
    entry = _entry(store, profile, name, front, env, leaf=leaf)
    path = kubeconfig_path(os.environ if env is None else env)
    merge_entry(path, entry)
    return entry, path


async def login_all_kube(store: ProfileStore, profile: Profile, *,
                         env: Mapping[str, str] | None = None) -> tuple[list[KubeEntry], Path]:
    """``lmsh kube login --all``: one certificate for every kube cluster the roles admit and
    an entry for each listed now (the first made current); the entries and the kubeconfig."""
    api = WebApi.for_profile(store, profile)
    try:
        names = sorted(str(i["name"]) for i in await list_kube_clusters(api))
        if not names:
            raise NotFound("no kube cluster you may use is online (see lmsh kube ls)")
        front = kube_front(await api.ping(), profile.proxy)
        await _fetch_any(api, store, profile)
    finally:
        await api.close()
    entries = [_entry(store, profile, name, front, env, any_cluster=True) for name in names]
    path = kubeconfig_path(os.environ if env is None else env)
    for entry in entries:
        merge_entry(path, entry, use_context=entry is entries[0])
    write_private(any_cert_path(store, profile).with_suffix(".contexts"),
                  "".join(f"{e.context}\n" for e in entries).encode())
    return entries, path


def _entry(store: ProfileStore, profile: Profile, name: str, front: tuple[str, int, str],
           env: Mapping[str, str] | None, *, leaf: str = "", any_cluster: bool = False
           ) -> KubeEntry:
    host, port, server_name = front
    server_host = f"[{host}]" if ":" in host else host
    environ = env if env is not None else os.environ
    command, command_args = exec_command(_lmsh_command())
    return KubeEntry(
        limen_cluster=leaf or profile.cluster, name=name, leaf=leaf,
        server=f"https://{server_host}:{port}", tls_server_name=server_name,
        ca_pem=store.ca_path(profile.proxy, profile.cluster).read_bytes(),
        proxy=profile.proxy, command=command, command_args=tuple(command_args),
        any_cluster=any_cluster,
        limen_home=str(limen_home(environ)) if environ.get("LIMEN_HOME") else "")


async def _fetch_any(api: WebApi, store: ProfileStore, profile: Profile) -> bytes:
    answer = await api.as_user_post("kube/certs", {"any_cluster": True})
    return _save_cert(str(answer["cert"]).encode(), any_cert_path(store, profile))


def _save_cert(pem: bytes, path: Path) -> bytes:
    try:
        x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise BadParameter("the kube certificate received is not a PEM certificate") from None
    write_private(path, pem)
    return pem


async def _fetch(api: WebApi, store: ProfileStore, profile: Profile, name: str,
                 leaf: str = "") -> bytes:
    answer = await api.as_user_post("kube/certs", {"kube_cluster": name} |
                                    ({"cluster": leaf} if leaf else {}))
    return _save_cert(str(answer["cert"]).encode(), cert_path(store, profile, name, leaf))


def _usable(pem: bytes, key_pem: bytes, profile: Profile, name: str | None, leaf: str,
            now: datetime) -> datetime | None:
    """The expiry of a saved certificate that can still be used, else None: the profile
    user's kube certificate from the profile's cluster, for kube cluster ``name`` (None: one
    naming no kube cluster) of ``leaf`` (empty: none), living more than a minute, of the
    login key (``limen.client.kube_credentials_fast`` checks the same without cryptography)."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        identity = identity_from_cert(cert)
        key = load_private_key(key_pem)
    except (ValueError, BadParameter):
        return None
    if identity is None or identity.route_to_kube != name or \
            (identity.route_to_cluster or "") != leaf:
        return None
    if identity.username != profile.user or identity.cluster != profile.cluster or \
            identity.is_system or identity.usage != ("kube",):
        return None
    if cert.not_valid_after_utc - _RENEW_MARGIN <= now:
        return None
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return None  # saved before the last lmsh login, which made a new key
    return cert.not_valid_after_utc


async def credentials(store: ProfileStore, profile: Profile, name: str | None, *,
                      now: datetime | None = None, leaf: str = "") -> ExecCredential:
    """The certificate and key kubectl presents for ``name`` (of trusted leaf cluster
    ``leaf``; None: the certificate naming no kube cluster; see the module)."""
    now = now or datetime.now(UTC)
    leaf = leaf if leaf != profile.cluster else ""
    if name is None and leaf:
        raise BadParameter("a certificate for every kube cluster is for this cluster's only")
    key_pem = store.key_path(profile.proxy, profile.user).read_bytes()
    path = cert_path(store, profile, name, leaf) if name is not None else \
        any_cert_path(store, profile)
    pem = path.read_bytes() if path.is_file() else b""
    expires = _usable(pem, key_pem, profile, name, leaf, now) if pem else None
    if expires is None:
        if not profile.is_valid(now):
            raise BadParameter(f"your Limen login expired at {profile.expires}: run lmsh login")
        api = WebApi.for_profile(store, profile)
        try:
            pem = await (_fetch(api, store, profile, name, leaf) if name is not None else
                         _fetch_any(api, store, profile))
        finally:
            await api.close()
        expires = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    key = private_key_to_pem(load_private_key(key_pem))
    return ExecCredential(pem, key.encode(), expires)


def exec_credential(credential: ExecCredential) -> dict[str, Any]:
    """The ``client.authentication.k8s.io/v1`` ExecCredential kubectl reads."""
    return exec_credential_doc(credential.cert_pem.decode(), credential.key_pem.decode(),
                               credential.expires.astimezone(UTC).strftime(
                                   "%Y-%m-%dT%H:%M:%SZ"))


def print_credentials(proxy: str | None, name: str | None, leaf: str = "") -> int:
    """``lmsh kube credentials``: print the ExecCredential of kube cluster ``name`` (None:
    the certificate naming none) of the profile of ``proxy`` (None: the current one); 0."""
    store = ProfileStore()
    profile = store.load(proxy) if proxy else store.current()
    credential = asyncio.run(credentials(store, profile, name, leaf=leaf))
    sys.stdout.write(json.dumps(exec_credential(credential)) + "\n")
    sys.stdout.flush()
    return 0
