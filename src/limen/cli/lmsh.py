"""``lmsh``: the user's command line (like Teleport's ``tsh``).

Entry point of the ``lmsh`` console script. Each subcommand lives in its own module, imported
only when it runs (``limen.cli.lazy_group``); the work is done in ``limen.client``.
"""

from __future__ import annotations

import click

from limen.cli.lazy_group import LazyGroup

__all__ = ["main"]

COMMANDS = {
    "login": "limen.cli.lmsh_login:login",
    "status": "limen.cli.lmsh_profile:status",
    "logout": "limen.cli.lmsh_profile:logout",
    "config": "limen.cli.lmsh_profile:ssh_config",
    "ls": "limen.cli.lmsh_access:ls",
    "ssh": "limen.cli.lmsh_access:ssh",
    "scp": "limen.cli.lmsh_access:scp",
    "play": "limen.cli.lmsh_recordings:play",
    "clusters": "limen.cli.lmsh_clusters:clusters",
    "signup": "limen.cli.lmsh_signup:signup",
    "recordings": "limen.cli.lmsh_recordings:recordings",
    "db": "limen.cli.lmsh_db:db",
    "kube": "limen.cli.lmsh_kube:kube",
    "apps": "limen.cli.lmsh_apps:apps",
    "request": "limen.cli.lmsh_requests:request",
    "proxy": "limen.cli.lmsh_proxy:proxy",
    "mfa": "limen.cli.lmsh_mfa:mfa",
}
"""Every ``lmsh`` subcommand: its name → where its click command is."""


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="limen")
def cli(debug: bool) -> None:
    """Reach servers, databases, Kubernetes and apps through Limen."""


def main() -> None:
    cli(prog_name="lmsh")
