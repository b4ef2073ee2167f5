"""``lmsh``: the user's command line (like Teleport's ``tsh``).

Entry point of the ``lmsh`` console script; the work is done in ``limen.client``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from limen.api.durations import parse_duration
from limen.ca.keys import generate_private_key, private_key_to_openssh, public_key_to_openssh
from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors
from limen.cli.lmsh_access import ls, play, scp, ssh
from limen.cli.lmsh_apps import apps
from limen.cli.lmsh_clusters import clusters
from limen.cli.lmsh_db import db, proxy_db
from limen.cli.lmsh_input import read_password
from limen.cli.lmsh_kube import kube
from limen.cli.lmsh_login import check_pin_format, login_target
from limen.cli.lmsh_recordings import recordings
from limen.cli.lmsh_requests import logged_in_profile, request
from limen.cli.lmsh_signup import signup
from limen.client.access_requests import login_with_request
from limen.client.app_access import forget_apps
from limen.client.clusters import refresh_clusters
from limen.client.db_profiles import forget_all_databases
from limen.client.kube_access import forget_kube_clusters
from limen.client.profile import Profile, ProfileStore
from limen.client.sshconfig import SSHConfigInput, render_ssh_config, write_ssh_config
from limen.client.webapi import WebApi
from limen.errors import BadParameter, LimenError

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="limen")
def cli(debug: bool) -> None:
    """Reach servers, databases, Kubernetes and apps through Limen."""


@cli.command()
@click.option("--proxy", help="Proxy web address HOST:PORT (default: the current profile's).")
@click.option("--user", help="Your Limen user name (default: the current profile's).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@click.option("--otp", default="", help="The current one-time code (asked for when needed).")
@click.option("--ttl", default="", help="Certificate lifetime, e.g. 8h (capped by your roles).")
@click.option("--ca-pin", default="", metavar="sha256:HEX",
              help="Trust the proxy only if its TLS CA has this pin (lmctl status shows it); "
                   "the CA is saved for later logins.")
@click.option("--insecure", is_flag=True, help="Do not verify the proxy's certificate.")
@click.option("--request-id", default="", metavar="ID",
              help="Add the roles of your approved access request (lmsh request ls) until it "
                   "expires; while logged in, no password is asked.")
@handle_errors
def login(proxy: str | None, user: str | None, password_stdin: bool, otp: str, ttl: str,
          ca_pin: str, insecure: bool, request_id: str) -> None:
    """Log in and receive short-lived SSH and X.509 certificates.

    With no --proxy and --user, logs in again where the current profile is."""
    ttl_seconds = int(parse_duration(ttl).total_seconds()) if ttl else None
    store = ProfileStore()
    proxy, user = login_target(store, proxy, user)
    current = logged_in_profile(store, proxy, user) if request_id and not password_stdin \
        else None
    if current is not None:
        _print_profile(asyncio.run(login_with_request(store, current, request_id, ttl_seconds)))
        return
    if ca_pin:
        check_pin_format(ca_pin)
    known_cas = {} if ca_pin else store.trusted_cas(proxy)

    async def run() -> Profile:
        api, ping = await WebApi.connect(proxy, known_cas=known_cas, ca_pin=ca_pin,
                                         insecure=insecure)
        try:
            password = read_password(password_stdin, "Password")
            code = otp
            if ping.get("second_factor") == "otp" and not code:
                code = click.prompt("One-time code", hide_input=False)
            key = generate_private_key()
            public = public_key_to_openssh(key.public_key(), f"{user}@{ping['cluster']}")
            answer = await api.login(user, password, code, public, ttl_seconds, request_id)
        finally:
            await api.close()
        profile = Profile(proxy=proxy, user=answer["user"], cluster=answer["cluster"],
                          expires=answer["expires"], roles=tuple(answer["roles"]),
                          logins=tuple(answer["logins"]), ssh_proxy=ping.get("ssh_proxy", ""))
        private = private_key_to_openssh(key).encode()
        store.save_login(
            profile, private_key=private, public_key=(public + "\n").encode(),
            ssh_cert=(answer["ssh_cert"] + "\n").encode(), tls_cert=answer["tls_cert"].encode(),
            tls_cas={c: pem.encode() for c, pem in answer["tls_cas"].items()},
            host_ca_lines=answer["known_hosts"])
        from limen.client.sshagent import add_to_agent  # asyncssh: loaded only when used

        lifetime = int((profile.expires_at - datetime.now(UTC)).total_seconds())
        if await add_to_agent(private, answer["ssh_cert"].encode(), lifetime):
            click.echo("Key and certificate added to ssh-agent.")
        return profile

    _print_profile(asyncio.run(run()))


def _print_profile(profile: Profile) -> None:
    valid = "valid" if profile.is_valid() else "EXPIRED"
    click.echo(f"> Profile URL: https://{profile.proxy}\n"
               f"  Logged in as: {profile.user}\n"
               f"  Cluster:      {profile.cluster}\n"
               f"  Roles:        {', '.join(profile.roles) or '-'}\n"
               f"  Logins:       {', '.join(profile.logins) or '-'}\n"
               f"  Valid until:  {profile.expires} [{valid}]")


@cli.command()
@OUTPUT_OPTION
@handle_errors
def status(output: str) -> None:
    """Who you are logged in as, with which roles and logins, until when."""
    profile = ProfileStore().current()
    if output != "text":
        data = {"proxy": profile.proxy, "user": profile.user, "cluster": profile.cluster,
                "roles": list(profile.roles), "logins": list(profile.logins),
                "expires": profile.expires, "valid": profile.is_valid()}
        emit_documents([data], output)
        return
    _print_profile(profile)


@cli.command()
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


@cli.command("config")
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
        known_hosts=store.known_hosts, lmsh=_lmsh_executable()))
    if not write:
        click.echo(text, nl=False)
        return
    written = write_ssh_config(Path.home() / ".ssh" / "config", profile.proxy, text)
    click.echo(f"Wrote the Limen block for {profile.proxy} to {written}; "
               f"try: ssh <node>.{profile.cluster}")


def _lmsh_executable() -> str:
    here = Path(sys.argv[0])
    return str(here.resolve()) if here.name == "lmsh" and here.exists() else (
        shutil.which("lmsh") or "lmsh")


@cli.group()
def proxy() -> None:
    """Helpers for stock clients: OpenSSH's ProxyCommand, a local database listener."""


@proxy.command("ssh")
@click.option("--proxy", "proxy_address", help="Proxy web address (default: current profile).")
@click.option("--cluster", help="Cluster of the target (default: the profile's).")
@click.argument("target")
@handle_errors
def proxy_ssh(proxy_address: str | None, cluster: str | None, target: str) -> None:
    """Relay stdin/stdout to LOGIN@HOST:PORT through the proxy (used as ProxyCommand)."""
    store = ProfileStore()
    profile = store.load(proxy_address) if proxy_address else store.current()
    login, _, host_port = target.rpartition("@")
    host, _, port = host_port.rpartition(":")
    if not login or not host or not port.isdigit():
        raise BadParameter("target must be LOGIN@HOST:PORT (OpenSSH's %r@%h:%p)")
    cluster = cluster or profile.cluster
    from limen.client.proxyssh import run_proxy_ssh  # asyncssh: loaded only when used

    status = asyncio.run(run_proxy_ssh(
        ssh_proxy=profile.ssh_proxy, login=login, target_host=host, target_port=int(port),
        cluster=cluster, key_path=store.key_path(profile.proxy, profile.user),
        cert_path=store.ssh_cert_path(profile.proxy, profile.user, profile.cluster),
        known_hosts=store.known_hosts))
    sys.exit(status)  # non-zero: the proxy's reason was printed as "lmsh: <reason>"


for _command in (ls, ssh, scp, play, clusters, signup):
    cli.add_command(_command)
cli.add_command(recordings)
cli.add_command(db)
cli.add_command(kube)
cli.add_command(apps)
cli.add_command(request)
proxy.add_command(proxy_db)


def main() -> None:
    cli(prog_name="lmsh")
