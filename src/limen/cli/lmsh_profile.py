"""``lmsh status``, ``lmsh logout`` and ``lmsh config``: the saved profile, shown (with the
traits its certificate carries, :mod:`limen.cli.lmsh_profile_view`), removed, or turned into an
OpenSSH config block.

Registered on the ``lmsh`` group by ``limen.cli.lmsh`` (loaded when one of them runs).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

import click

from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors
from limen.cli.lmsh_profile_view import print_profile, profile_traits
from limen.client.app_access import forget_apps
from limen.client.clusters import refresh_clusters
from limen.client.db_profiles import forget_all_databases
from limen.client.kube_access import forget_kube_clusters
from limen.client.profile import ProfileStore
from limen.client.proxyssh_command import helper_command
from limen.client.sshconfig import SSHConfigInput, render_ssh_config, write_ssh_config
from limen.errors import BadParameter, LimenError

__all__ = ["logout", "ssh_config", "status"]


@click.command()
@OUTPUT_OPTION
@handle_errors
def status(output: str) -> None:
    """Who you are logged in as, with which roles and logins, until when."""
    profile = ProfileStore().current()
    if output != "text":
        data = {"proxy": profile.proxy, "user": profile.user, "cluster": profile.cluster,
                "roles": list(profile.roles), "logins": list(profile.logins),
                "traits": profile_traits(profile), "expires": profile.expires,
                "valid": profile.is_valid()}
        emit_documents([data], output)
        return
    print_profile(profile)


@click.command()
@click.option("--proxy", help="Log out of this proxy only (default: the current profile).")
@handle_errors
def logout(proxy: str | None) -> None:
    """Remove your keys and certificates from disk and from ssh-agent."""
    store = ProfileStore()
    proxy = proxy or store.current().proxy
    profile = store.load(proxy)
    key_path = store.key_path(proxy, profile.user)
    cert_path = store.ssh_cert_path(proxy, profile.user, profile.cluster)
    if key_path.exists():
        from limen.client.sshagent import remove_from_agent  # asyncssh: loaded only when used

        cert = cert_path.read_bytes() if cert_path.exists() else None
        asyncio.run(remove_from_agent(key_path.read_bytes(), cert))
    forget_all_databases(store, profile)  # their sections in ~/.pg_service.conf, ~/.my.cnf
    forget_kube_clusters(store, profile)  # their contexts in the kubeconfig
    forget_apps(store, profile)  # the app certificates and their keys
    store.logout(proxy)
    click.echo(f"Logged out {profile.user} from {proxy}.")


@click.command("config")
@click.option("--write", is_flag=True,
              help="Put the block in ~/.ssh/config (created if missing), replacing the one "
                   "written before, instead of printing it.")
@handle_errors
def ssh_config(write: bool) -> None:
    """Print an OpenSSH config block: then `ssh <node>.<cluster>` works with the stock client."""
    store = ProfileStore()
    profile = store.current()
    if not profile.ssh_proxy:
        raise BadParameter("the proxy did not announce an SSH address; log in again")
    if profile.is_valid():  # the leaves the root lets this user reach now (and their CAs)
        try:
            profile, _leaves = asyncio.run(refresh_clusters(store, profile))
        except (LimenError, OSError) as err:
            click.echo(f"lmsh: leaf clusters not refreshed ({err}); using the last known",
                       err=True)
    clusters = [profile.cluster, *profile.leaf_clusters]
    root_cert = store.ssh_cert_path(profile.proxy, profile.user, profile.cluster)
    text = render_ssh_config(SSHConfigInput(
        proxy=profile.proxy, ssh_proxy=profile.ssh_proxy, user=profile.user, clusters=clusters,
        key_path=store.key_path(profile.proxy, profile.user),
        cert_paths=[root_cert for _cluster in clusters],
        known_hosts=store.known_hosts, proxy_command=helper_command(lmsh_executable())))
    if not write:
        click.echo(text, nl=False)
        return
    written = write_ssh_config(Path.home() / ".ssh" / "config", profile.proxy, text)
    click.echo(f"Wrote the Limen block for {profile.proxy} to {written}; "
               f"try: ssh <node>.{profile.cluster}")


def lmsh_executable() -> str:
    here = Path(sys.argv[0])
    return str(here.resolve()) if here.name == "lmsh" and here.exists() else (
        shutil.which("lmsh") or "lmsh")
