"""The kubeconfig entries ``lmsh kube login`` merges and ``lmsh kube logout`` removes.

One cluster, user and context per Limen kube cluster, all named ``<limen cluster>-<name>``
(``kubectl config use-context`` switches between them)::

    clusters: [{name: main-prod, cluster: {
                 server: https://proxy:3026/v1/limen/bWFpbg/cHJvZA,
                 certificate-authority-data: <the cluster's TLS CA>}}]
    users:    [{name: main-prod, user: {exec: {apiVersion: client.authentication.k8s.io/v1,
                 command: /usr/bin/python3,
                 args: [-I, -S, .../limen/client/kube_credentials_main.py,
                        kube, credentials, --proxy, proxy:3080, --cluster, prod],
                 env: [{name: LIMEN_HOME, value: ...}]   (when LIMEN_HOME is set)
                 interactiveMode: Never, provideClusterInfo: false}}}]
    contexts: [{name: main-prod, context: {cluster: main-prod, user: main-prod}}]

The server URL's path names the Limen cluster and the kube cluster
(:func:`limen.net.kube_path.route_path`: base64url of ``main`` and ``prod``): kubectl puts it
before every API path, and the proxy routes by it. ``lmsh kube login --all`` writes the
same entries with one exec plugin for all of them (``args: [kube, credentials, --proxy,
proxy:3080, --all]``): one certificate that names no kube cluster, routed by the path.

When the proxy publishes no kube listener (single-port mode), ``server`` is its web address
and the cluster carries ``tls-server-name: kube-limen-proxy.limen.local``: kubectl sends that
name as SNI, which the web port routes to the kube front, and checks that the proxy's
certificate holds it (:mod:`limen.net.kube_sni`).

No secret is written into the kubeconfig: kubectl runs the exec plugin for the certificate
and key each time it needs them: ``limen.client.kube_credentials_main`` (what
``lmsh kube credentials`` does, started without click or cryptography while the saved
certificate serves), or ``lmsh kube credentials`` itself (``command: <lmsh>``, no
``-I -S`` arguments) where the interpreter is unknown. The file is ``$KUBECONFIG`` (its first entry
when it lists several) or ``~/.kube/config``; other entries are kept as they are, the file is
written atomically with mode 0600. :func:`render` is pure (golden-file tested);
:func:`merge_entry` and :func:`remove_entries` read and write. Called by
``limen.client.kube_access`` and ``limen.cli.lmsh_kube``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from limen.errors import BadParameter
from limen.files import replace_atomically
from limen.net.kube_path import route_path

__all__ = ["KubeEntry", "context_name", "kubeconfig_path", "merge_entry", "remove_entries",
           "render"]

EXEC_API_VERSION = "client.authentication.k8s.io/v1"


@dataclass(frozen=True)
class KubeEntry:
    limen_cluster: str
    name: str
    """The kube cluster's name in Limen."""
    server: str
    """``https://host:port`` of the proxy's kube front (the route's path is added)."""
    ca_pem: bytes
    proxy: str
    """The proxy's web address (the profile ``lmsh kube credentials`` uses)."""
    command: str
    """The executable kubectl runs: the Python interpreter, or ``lmsh``."""
    command_args: tuple[str, ...] = ()
    """Its arguments before ``kube credentials`` (``-I -S <kube_credentials_main.py>``)."""
    limen_home: str = ""
    """``LIMEN_HOME`` to pass to it, when set."""
    leaf: str = ""
    """The trusted leaf cluster the kube cluster belongs to (empty: the proxy's own)."""
    tls_server_name: str = ""
    """The server name kubectl sends and checks (the web port's kube route); empty: the
    ``server``'s host."""
    any_cluster: bool = False
    """The exec plugin's certificate names no kube cluster (``lmsh kube login --all``)."""

    @property
    def server_url(self) -> str:
        """``server`` with the path naming the kube cluster."""
        return self.server.rstrip("/") + route_path(self.leaf or self.limen_cluster, self.name)

    @property
    def context(self) -> str:
        return context_name(self.limen_cluster, self.name)


def context_name(limen_cluster: str, name: str) -> str:
    return f"{limen_cluster}-{name}"


def kubeconfig_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    listed = [p for p in env.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return Path(listed[0])
    return Path(env.get("HOME") or Path.home()) / ".kube" / "config"


def render(entry: KubeEntry) -> dict[str, Any]:
    """The cluster, user and context documents of ``entry`` (see the module)."""
    exec_config: dict[str, Any] = {
        "apiVersion": EXEC_API_VERSION, "command": entry.command,
        "args": [*entry.command_args, "kube", "credentials", "--proxy", entry.proxy,
                 *(["--all"] if entry.any_cluster else ["--cluster", entry.name]),
                 *(["--leaf-cluster", entry.leaf] if entry.leaf else [])],
        "interactiveMode": "Never", "provideClusterInfo": False}
    if entry.limen_home:
        exec_config["env"] = [{"name": "LIMEN_HOME", "value": entry.limen_home}]
    cluster: dict[str, Any] = {
        "server": entry.server_url,
        "certificate-authority-data": base64.b64encode(entry.ca_pem).decode()}
    if entry.tls_server_name:
        cluster["tls-server-name"] = entry.tls_server_name
    return {
        "cluster": {"name": entry.context, "cluster": cluster},
        "user": {"name": entry.context, "user": {"exec": exec_config}},
        "context": {"name": entry.context,
                    "context": {"cluster": entry.context, "user": entry.context}},
    }


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    except OSError as err:
        raise BadParameter(f"cannot read the kubeconfig {path}: {err.strerror}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        raise BadParameter(f"the kubeconfig {path} is not valid YAML") from None
    if not isinstance(doc, dict):
        raise BadParameter(f"the kubeconfig {path} is not a mapping")
    return doc


def _replace(items: Any, item: Mapping[str, Any]) -> list[Any]:
    kept = [i for i in (items or []) if not (isinstance(i, Mapping)
                                             and i.get("name") == item["name"])]
    return [*kept, dict(item)]


def _save(path: Path, doc: Mapping[str, Any]) -> None:
    """Write atomically, mode 0600; a missing directory is created 0700 (an existing one,
    such as a shared ``~/.kube``, is left as it is)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    replace_atomically(path, yaml.safe_dump(dict(doc), sort_keys=False), 0o600)


def merge_entry(path: Path, entry: KubeEntry, *, use_context: bool = True) -> None:
    """Add (or replace) ``entry`` in the kubeconfig at ``path``; make it current."""
    doc = _load(path)
    parts = render(entry)
    doc.setdefault("apiVersion", "v1")
    doc.setdefault("kind", "Config")
    doc["clusters"] = _replace(doc.get("clusters"), parts["cluster"])
    doc["users"] = _replace(doc.get("users"), parts["user"])
    doc["contexts"] = _replace(doc.get("contexts"), parts["context"])
    if use_context:
        doc["current-context"] = entry.context
    _save(path, doc)


def remove_entries(path: Path, names: Sequence[str]) -> list[str]:
    """Remove the clusters, users and contexts named ``names``; the names removed."""
    if not path.exists():
        return []
    doc = _load(path)
    removed: set[str] = set()
    for section in ("clusters", "users", "contexts"):
        items = doc.get(section) or []
        kept = [i for i in items if not (isinstance(i, Mapping) and i.get("name") in names)]
        removed |= {str(i.get("name")) for i in items
                    if isinstance(i, Mapping) and i.get("name") in names}
        doc[section] = kept
    if doc.get("current-context") in names:
        doc["current-context"] = ""
    if removed:
        _save(path, doc)
    return sorted(removed)
