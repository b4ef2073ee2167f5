"""``lmsh ls``, ``lmsh ssh`` and ``lmsh scp``: reaching nodes (``lmsh play``, which replays
sessions, is in :mod:`limen.cli.lmsh_recordings`). ``ssh`` and ``scp`` run the stock OpenSSH
client with Limen's key, certificate and known_hosts, and ``lmsh proxy ssh`` as ProxyCommand,
so every OpenSSH option works.
Registered on the ``lmsh`` group by ``limen.cli.lmsh``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from typing import Any

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors, print_table
from limen.client.clusters import leaf_host, refresh_clusters, require_leaf
from limen.client.nodes import is_label_selector, matching, parse_selector
from limen.client.profile import Profile, ProfileStore
from limen.client.ssh_command import openssh_options, split_ssh_args, ssh_argv
from limen.client.webapi import get_as_current_user
from limen.errors import BadParameter, NotFound

__all__ = ["ls", "openssh_options", "scp", "split_ssh_args", "ssh"]


def _nodes(cluster: str | None = None) -> list[dict[str, Any]]:
    """Nodes of the profile's cluster, or of leaf ``cluster`` (as the leaf publishes them)."""
    if cluster and cluster != ProfileStore().current().cluster:
        return list(asyncio.run(get_as_current_user(f"clusters/{cluster}/nodes"))["items"])
    return list(asyncio.run(get_as_current_user("nodes"))["items"])


@click.command()
@click.option("--cluster", help="List a leaf cluster's nodes (see lmsh clusters).")
@click.argument("selector", nargs=-1)
@OUTPUT_OPTION
@handle_errors
def ls(cluster: str | None, selector: tuple[str, ...], output: str) -> None:
    """The nodes you may log in to (filter with k=v labels). For a leaf cluster, its nodes;
    the leaf decides the logins when you connect. The ID reaches a node when several share
    its name (lmsh ssh LOGIN@ID)."""
    nodes = matching(_nodes(cluster), parse_selector(selector))
    if output != "text":
        emit_documents(nodes, output, as_list=True)
        return
    print_table(["Node Name", "ID", "Address", "Labels", "Logins"], [
        (n["hostname"], n.get("host_id") or "-", n["address"] or "⟵ tunnel",
         ",".join(f"{k}={v}" for k, v in sorted(n["labels"].items())),
         ",".join(n.get("logins", ())))
        for n in nodes])


def _current(cluster: str | None = None) -> tuple[ProfileStore, Profile]:
    """The valid current profile; for a leaf ``cluster``, asks the root (lmsh clusters) so
    known_hosts trusts the leaf's host CA keys as the root knows them now (a leaf's host CA
    rotation reaches the root: docs/ca-rotation.md)."""
    store = ProfileStore()
    profile = store.current_valid()
    if cluster and cluster != profile.cluster:
        profile, leaves = asyncio.run(refresh_clusters(store, profile))
        require_leaf(leaves, cluster)
    return store, profile


def _target(host: str, profile: Profile, cluster: str | None) -> str:
    """The host name OpenSSH uses: ``web1.leaf`` for a leaf (its known_hosts pattern)."""
    return leaf_host(host, cluster) if cluster and cluster != profile.cluster else host


@click.command(context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.option("--cluster", help="A leaf cluster to reach (default: the profile's).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
@handle_errors
def ssh(cluster: str | None, args: tuple[str, ...]) -> None:
    """lmsh ssh [OPENSSH OPTIONS] [LOGIN@]HOST [COMMAND...]: a shell or a command on a node,
    or COMMAND on every node matching k=v labels. -L, -R, -A, -t... work as in OpenSSH."""
    store, profile = _current(cluster)
    base, host, command = ssh_argv(store, profile, cluster, args)
    if not is_label_selector(host):
        os.execvp("ssh", [*base, _target(host, profile, cluster), *command])  # noqa: S606
    if not command:
        raise BadParameter("a label selector runs a command on every match: give a COMMAND")
    nodes = matching(_nodes(cluster), parse_selector([host]))
    if not nodes:
        raise NotFound(f"no node you may log in to matches {host}")
    worst = 0
    names = Counter(node["hostname"] for node in nodes)
    for node in nodes:
        # by host id (a principal of its host certificate): two nodes may share a name
        name = node.get("host_id") or node["hostname"]
        prefix = node["hostname"] if names[node["hostname"]] == 1 else \
            f"{node['hostname']} {name}"
        result = subprocess.run([*base, _target(name, profile, cluster), *command],
                                capture_output=True, check=False)
        for stream, data in ((sys.stdout, result.stdout), (sys.stderr, result.stderr)):
            for line in data.decode(errors="replace").splitlines():
                stream.write(f"[{prefix}] {line}\n")
        worst = max(worst, result.returncode)
    sys.exit(worst)


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--cluster", help="A leaf cluster to reach (default: the profile's).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
@handle_errors
def scp(cluster: str | None, args: tuple[str, ...]) -> None:
    """Copy files: lmsh scp [-r] SRC... DST, remote paths as [LOGIN@]HOST:PATH."""
    store, profile = _current(cluster)
    os.execvp("scp", ["scp", *openssh_options(store, profile, cluster),  # noqa: S606
                      *(_scp_arg(a, profile, cluster) for a in args)])


def _scp_arg(arg: str, profile: Profile, cluster: str | None) -> str:
    """``[login@]host:path`` with the host named for a leaf cluster; other args unchanged."""
    if arg.startswith("-") or ":" not in arg or arg.startswith(("/", "./")):
        return arg
    head, _, path = arg.partition(":")
    login, at, host = head.rpartition("@")
    return f"{login}{at}{_target(host, profile, cluster)}:{path}"
