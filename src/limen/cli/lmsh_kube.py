"""``lmsh kube``: Kubernetes clusters through Limen with the stock kubectl (like ``tsh kube``).

::

    lmsh kube ls [-o json]             the online kube clusters your roles admit, with the
                                       kubernetes groups and users granted there
    lmsh kube login NAME               a certificate on disk and a context <cluster>-NAME in
                                       the kubeconfig ($KUBECONFIG or ~/.kube/config), made
                                       current: then plain kubectl
    lmsh kube login --all              one certificate for every kube cluster your roles admit
                                       and a context for each listed now (the server URL
                                       names the cluster, the proxy routes by it)
    lmsh kube ls|login --cluster LEAF  a trusted leaf cluster's kube clusters, through this
                                       proxy (context LEAF-NAME; the leaf decides with your
                                       mapped roles)
    lmsh kube logout [NAME]            removes the certificate(s) and their kubeconfig entries
    lmsh kube credentials --cluster NAME|--all [--proxy P] [--leaf-cluster LEAF]
                                       what kubectl's exec plugin runs: an ExecCredential
                                       (client.authentication.k8s.io/v1) with the certificate
                                       and key, a fresh certificate when the saved one expires
                                       (the kubeconfig runs the same without click:
                                       limen.client.kube_credentials_main)

``kube`` is registered on the ``lmsh`` group by ``limen.cli.lmsh``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors, print_table
from limen.cli.lmctl_format import labels_text
from limen.client.kube_access import (
    forget_kube_clusters,
    list_kube_clusters,
    login_all_kube,
    login_kube,
    print_credentials,
)
from limen.client.profile import Profile, ProfileStore
from limen.client.webapi import WebApi

__all__ = ["kube"]


def _logged_in() -> tuple[ProfileStore, Profile]:
    store = ProfileStore()
    return store, store.current_valid()


_LEAF = click.option("--cluster", "leaf", default="", help="A trusted leaf cluster's kube "
                     "cluster (default: this proxy's own cluster).")


async def _clusters(store: ProfileStore, profile: Profile, leaf: str = ""
                    ) -> list[dict[str, Any]]:
    api = WebApi.for_profile(store, profile)
    try:
        return await list_kube_clusters(api, leaf if leaf != profile.cluster else "")
    finally:
        await api.close()


@click.group()
def kube() -> None:
    """Kubernetes clusters: list, log in (kubeconfig), log out."""


@kube.command("ls")
@OUTPUT_OPTION
@_LEAF
@handle_errors
def ls(output: str, leaf: str) -> None:
    """The online kube clusters your roles admit."""
    store, profile = _logged_in()
    items = asyncio.run(_clusters(store, profile, leaf))
    if output != "text":
        emit_documents(items, output, as_list=True)
        return
    if not items:
        click.echo("no kube cluster you may use is online", err=True)
        return
    print_table(["NAME", "DESCRIPTION", "LABELS", "GROUPS", "USERS"], [
        (i["name"], i.get("description") or "-",
         labels_text(i.get("labels") or {}),
         ",".join(i.get("kubernetes_groups") or ()) or "-",
         ",".join(i.get("kubernetes_users") or ()) or "-")
        for i in items])


@kube.command("login")
@click.argument("name", required=False)
@_LEAF
@click.option("--all", "any_cluster", is_flag=True,
              help="One certificate for every kube cluster your roles admit, a context each.")
@handle_errors
def login(name: str | None, leaf: str, any_cluster: bool) -> None:
    """Log in to kube cluster NAME: kubectl then uses it (context <cluster>-NAME)."""
    store, profile = _logged_in()
    if any_cluster:
        if name or leaf:
            raise click.UsageError("--all names no kube cluster and no leaf cluster")
        entries, path = asyncio.run(login_all_kube(store, profile))
        click.echo(f"Logged in to {len(entries)} kube cluster(s) with one certificate: "
                   f"contexts {', '.join(e.context for e in entries)} in {path}; "
                   f"{entries[0].context} is current.\n  kubectl get pods")
        return
    if not name:
        raise click.UsageError("name a kube cluster (see lmsh kube ls), or --all")
    entry, path = asyncio.run(login_kube(store, profile, name, leaf=leaf))
    click.echo(f"Logged in to kube cluster {name}: context {entry.context} in {path} is "
               "current.\n  kubectl get pods")


@kube.command("logout")
@click.argument("name", required=False)
@handle_errors
def logout(name: str | None) -> None:
    """Forget kube cluster NAME (every kube cluster without NAME)."""
    store = ProfileStore()
    profile = store.current()
    removed = forget_kube_clusters(store, profile, [name] if name else None)
    click.echo(f"Logged out of {', '.join(removed) or 'no kube cluster'}.")


@kube.command("credentials")
@click.option("--cluster", "name", help="The kube cluster (its Limen name).")
@click.option("--all", "any_cluster", is_flag=True,
              help="The certificate naming no kube cluster (lmsh kube login --all).")
@click.option("--proxy", help="The proxy of the profile (default: the current one).")
@click.option("--leaf-cluster", "leaf", default="",
              help="The trusted leaf cluster of the kube cluster (default: the proxy's own).")
@handle_errors
def credentials_command(name: str | None, any_cluster: bool, proxy: str | None,
                        leaf: str) -> None:
    """Print kubectl's ExecCredential for kube cluster NAME (the exec plugin)."""
    if bool(name) == any_cluster:
        raise click.UsageError("give one of --cluster NAME and --all")
    print_credentials(proxy, None if any_cluster else name, leaf)
