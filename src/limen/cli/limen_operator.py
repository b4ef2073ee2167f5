"""``limen operator``: run the Kubernetes operator; ``limen operator seed-ca`` and
``limen operator identity``, the two jobs around it.

Every option also reads an environment variable (``LIMEN_OPERATOR_*``, ``LIMEN_AUTH_ADDRESS``),
so the Deployment in ``manifests/`` configures the operator without arguments. Added to the
``limen`` command group by ``limen.cli.limen``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from limen.api.validation import parse_duration
from limen.cli.common import handle_errors

__all__ = ["operator"]


@click.group(invoke_without_command=True)
@click.option("-n", "--namespace", "namespaces", multiple=True,
              envvar="LIMEN_OPERATOR_NAMESPACES",
              help="Watch this namespace (repeatable; env: comma-separated list).")
@click.option("-A", "--all-namespaces", is_flag=True,
              help="Watch every namespace (the default without --namespace).")
@click.option("--standalone", is_flag=True, envvar="LIMEN_OPERATOR_STANDALONE",
              help="No peering with other instances of this operator.")
@click.option("--liveness", metavar="URL", envvar="LIMEN_OPERATOR_LIVENESS",
              help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.")
@click.option("--diag-addr", metavar="HOST:PORT", envvar="LIMEN_OPERATOR_DIAG_ADDR",
              help="Diagnostics listener: /metrics, /healthz, /readyz (plain HTTP).")
@click.option("--operator-id", envvar="LIMEN_OPERATOR_ID",
              help="Handle only objects labelled limen.dev/operator-id=ID.")
@click.option("--auth", "auth_address", metavar="HOST:PORT", envvar="LIMEN_AUTH_ADDRESS",
              help="The auth API to push resources to.")
@click.option("-i", "--identity", type=click.Path(path_type=Path),
              envvar="LIMEN_OPERATOR_IDENTITY", help="The operator's identity directory.")
@click.option("--data-dir", type=click.Path(path_type=Path), envvar="LIMEN_OPERATOR_DATA_DIR",
              help="Development: the data directory of a local `limen start`.")
@click.option("--resync", help="Drift check interval, e.g. 60s (env LIMEN_OPERATOR_RESYNC).")
@click.option("--delete-deadline",
              help="How long a deletion waits for an unreachable auth, e.g. 5m.")
@click.pass_context
@handle_errors
def operator(ctx: click.Context, namespaces: tuple[str, ...], all_namespaces: bool,
             standalone: bool, liveness: str | None, diag_addr: str | None,
             operator_id: str | None,
             auth_address: str | None, identity: Path | None, data_dir: Path | None,
             resync: str | None, delete_deadline: str | None) -> None:
    """Run the Kubernetes operator (like `kopf run -m limen.operator`)."""
    if ctx.invoked_subcommand is not None:
        return
    from limen.operator.main import run
    from limen.operator.settings import OperatorConfig

    watched = [n.strip() for item in namespaces for n in item.split(",") if n.strip()]
    if all_namespaces and watched:
        raise click.UsageError("use either --namespace or --all-namespaces")
    config = OperatorConfig.from_env(
        operator_id=operator_id, auth_address=auth_address, identity_dir=identity,
        data_dir=data_dir,
        resync_seconds=parse_duration(resync).total_seconds() if resync else None,
        delete_deadline_seconds=(parse_duration(delete_deadline).total_seconds()
                                 if delete_deadline else None))
    asyncio.run(run(config, namespaces=watched, standalone=standalone, liveness=liveness,
                    diag_addr=diag_addr or ""))


@operator.command("seed-ca")
@click.option("--ca-dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="The mounted CA Secret of the Cluster.")
@click.option("--data-dir", required=True, type=click.Path(path_type=Path),
              help="auth's data directory.")
@click.option("-c", "--config", type=click.Path(path_type=Path, exists=True),
              help="auth's limen.yaml: its backend (and ca_key_file); default SQLite in "
                   "--data-dir.")
@handle_errors
def seed_ca(ca_dir: Path, data_dir: Path, config: Path | None) -> None:
    """Put the Cluster's CAs into auth's backend (the auth pod's init container)."""
    from limen.operator.main import seed_ca_from_dir

    written = seed_ca_from_dir(ca_dir, data_dir, config)
    click.echo(f"CAs written: {', '.join(written)}" if written else "CAs already in place")


@operator.command("identity")
@click.option("--data-dir", required=True, type=click.Path(path_type=Path, exists=True),
              help="The data directory of the Limen cluster.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Directory to write the identity to (key.pem, tls.crt, cas.pem, meta.json).")
@click.option("--ttl", default="8760h", show_default=True, help="Validity of the certificate.")
@click.option("--ca-key-file", type=click.Path(path_type=Path), envvar="LIMEN_CA_KEY_FILE",
              help="The cluster's backend.ca_key_file, when its CA records are encrypted.")
@handle_errors
def identity(data_dir: Path, out: Path, ttl: str, ca_key_file: Path | None) -> None:
    """Issue the operator's identity (an admin certificate) from the cluster's TLS CA."""
    from limen.operator.main import write_operator_identity

    credentials = write_operator_identity(data_dir, out, parse_duration(ttl), ca_key_file)
    click.echo(f"identity of limen-operator for cluster {credentials.cluster} written to {out}\n"
               f"  kubectl -n limen-system create secret generic limen-operator-identity "
               f"--from-file={out}")
