"""``limen``: the daemon (``limen start``) and the Kubernetes operator (``limen operator``).

Entry point of the ``limen`` console script.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from limen.cli.common import handle_errors
from limen.cli.compose import cluster_services
from limen.cli.daemon import run_daemon
from limen.cli.diag_wiring import diagnostics
from limen.cli.limen_operator import operator
from limen.cli.log_format import LOG_FORMATS, configure_logging
from limen.config import Settings, load_settings, parse_labels
from limen.diag.metrics import Metrics
from limen.net.event_loop import run as run_loop

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Verbose logs and tracebacks.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text",
              envvar="LIMEN_LOG_FORMAT", show_default=True,
              help="text for a terminal, json (one object per line) for a log collector.")
@click.version_option(package_name="limen")
def cli(debug: bool, log_format: str) -> None:
    """Limen: identity-aware access, declared in Git."""
    configure_logging(debug=debug, log_format=log_format)


@cli.command()
@click.option("-c", "--config", "config_file", type=click.Path(path_type=Path, exists=True),
              help="limen.yaml")
@click.option("--data-dir", type=click.Path(path_type=Path), help="State directory.")
@click.option("--roles", help="Comma-separated: auth,proxy,node (default), db, kube, app.")
@click.option("--cluster-name", help="Cluster name (first start only).")
@click.option("--gitops", "gitops_source", help="Git repository (path or URL) to sync from.")
@click.option("--gitops-branch", help="Branch to follow (default main).")
@click.option("--gitops-path", help="Sub-directory holding the documents.")
@click.option("--gitops-interval", help="Poll interval, e.g. 15s.")
@click.option("--token", help="Join token (agents started apart from auth).")
@click.option("--proxy", help="Proxy web address to join through (agents).")
@click.option("--auth-server", help="Auth API address a separate proxy uses (mutual TLS).")
@click.option("--auth-join", help="Auth's join listener, where a separate proxy joins "
              "(default: the --auth-server host, its port + 2).")
@click.option("--ca-pin", help="sha256:... pin of the cluster's TLS CA (with --token).")
@click.option("--labels", help="Labels of what this agent serves: k=v,k2=v2.")
@click.option("--nodename", help="The name this node is listed and reached by (default: the "
              "machine's hostname).")
@click.option("--insecure-second-factor-off", "second_factor_off", is_flag=True,
              help="Development only: log in with a password alone.")
@click.option("--random-ports", is_flag=True, help="Every listener on a free loopback port.")
@click.option("--diag-addr", help="Diagnostics listener HOST:PORT (/metrics, /healthz, "
              "/readyz; plain HTTP, e.g. 127.0.0.1:3000); off by default.")
@click.pass_context
@handle_errors
def start(ctx: click.Context, config_file: Path | None, data_dir: Path | None, roles: str | None,
          cluster_name: str | None, gitops_source: str | None, gitops_branch: str | None,
          gitops_path: str | None, gitops_interval: str | None, token: str | None,
          proxy: str | None, auth_server: str | None, auth_join: str | None,
          ca_pin: str | None,
          labels: str | None, nodename: str | None, second_factor_off: bool,
          random_ports: bool, diag_addr: str | None) -> None:
    """Run a Limen cluster (single node by default) in the foreground; SIGTERM stops it."""
    overrides: dict[str, Any] = {
        "data_dir": str(data_dir) if data_dir else None,
        "roles": [r.strip() for r in roles.split(",") if r.strip()] if roles else None,
        "cluster": {"name": cluster_name,
                    "second_factor": "off" if second_factor_off else None},
        "gitops": {"source": gitops_source, "branch": gitops_branch, "path": gitops_path,
                   "interval": gitops_interval},
        "join": {"token": token, "proxy": proxy, "auth_server": auth_server,
                 "auth_join": auth_join, "ca_pin": ca_pin},
        "node": {"labels": parse_labels(labels) if labels else None, "nodename": nodename},
        "diag_addr": diag_addr,
    }
    settings = load_settings(config_file, overrides=_drop_none(overrides),
                             random_ports=random_ports)
    run_loop(_run(settings), settings.event_loop)


async def _run(settings: Settings) -> None:
    metrics = Metrics()  # counted only when served: no --diag-addr, no instrumentation
    async with cluster_services(settings, metrics if settings.diag_addr else None) as services:
        diag = diagnostics(settings, metrics, services)  # first: probes answer while it starts
        started = [diag, *services] if diag is not None else services
        await run_daemon(settings, lambda _s: started, echo=click.echo,
                         on_ready=lambda listeners: _print_next_steps(settings, listeners))


def _print_next_steps(settings: Settings, listeners: dict[str, str]) -> None:
    if "web" not in listeners or "auth" not in settings.roles:
        return
    lmctl = f"lmctl --data-dir {settings.data_dir}"
    click.echo(
        "\nNext steps (in another terminal, with .venv/bin on PATH):\n"
        f"  {lmctl} users add me --roles access --logins $USER  # or: users invite NAME\n"
        "  lmsh signup --link '<the link it printed>'              # password + authenticator\n"
        f"  lmsh login --proxy {listeners['web']} --user me\n"
        "  lmsh status")


def _drop_none(tree: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


cli.add_command(operator)


def main() -> None:
    cli(prog_name="limen")
