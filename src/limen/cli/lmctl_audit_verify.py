"""``lmctl audit verify [DAY|FILE ...]``: check the audit log's hash chain and signed
checkpoints (:mod:`limen.events.verify`) and name the first broken line of each file.

The files are read directly (default ``DATA_DIR/log/events``, or ``--dir`` for a copy), or with
``--postgres [DSN_FILE]`` the days of the PostgreSQL audit log of a cluster whose backend is
PostgreSQL (``limen.events.postgres_verify``; no file: the DSN from ``LIMEN_BACKEND_DSN``); the
public keys of auth's JWT CA, which signs the checkpoints, come from the cluster
(``CertAuthority/jwt.<cluster>``: the running cluster's API, or the data directory when
nothing runs from it) or from ``--key`` files kept elsewhere (PEM, OpenSSH line, or the JWKS
that ``--export-key`` prints). Exit 0 with a summary when every file is intact, 1 when one is
broken. Registered in ``limen.cli.lmctl`` under the ``audit`` group.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

import click

from limen.auth.audit_signer import audit_keys
from limen.backend.postgres_dsn import read_dsn
from limen.ca.keys import jwk_thumbprint, load_public_key, public_jwk, public_key_from_jwk
from limen.cli.admin_api import AdminApi
from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors
from limen.cli.lmctl_run import run_admin
from limen.errors import BadParameter
from limen.events.chain import PublicKey
from limen.events.filelog import DAY_FILE_PATTERN, day_files
from limen.events.postgres_log import PostgresLog
from limen.events.postgres_verify import verify_postgres
from limen.events.verify import FileReport, verify_files

__all__ = ["verify"]


@click.command("verify")
@click.argument("targets", nargs=-1, metavar="[DAY|FILE]...")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
              help="Directory of the day files (default: DATA_DIR/log/events).")
@click.option("--postgres", "dsn_file", is_flag=False, flag_value="", default=None,
              metavar="[DSN_FILE]",
              help="Verify the PostgreSQL audit log (the backend's DSN file; without one, "
                   "LIMEN_BACKEND_DSN) instead of day files.")
@click.option("--key", "key_files", multiple=True, type=click.Path(path_type=Path,
              dir_okay=False, exists=True),
              help="Public key to trust instead of asking the cluster: PEM, OpenSSH or JWKS "
                   "(repeatable).")
@click.option("--export-key", is_flag=True,
              help="Print the cluster's checkpoint keys as a JWKS (for --key) and exit.")
@OUTPUT_OPTION
@handle_errors
def verify(targets: tuple[str, ...], directory: Path | None, dsn_file: str | None,
           key_files: tuple[Path, ...], export_key: bool, output: str) -> None:
    """Verify the audit log's hash chain and signed checkpoints (all days, or DAY/FILE)."""
    if dsn_file is not None and directory is not None:
        raise BadParameter("--postgres and --dir name two different logs: give one")
    keys = _keys_from_files(key_files) if key_files else run_admin(_cluster_keys)
    if export_key:
        click.echo(json.dumps({"keys": [public_jwk(k, kid) for kid, k in keys.items()]},
                              indent=2))
        return
    if dsn_file is not None:
        reports = _verify_postgres(dsn_file, keys, targets)
    else:
        root = click.get_current_context().find_root().params
        log_dir = directory or Path(root["data_dir"]) / "log" / "events"
        paths = _targets(log_dir, targets)
        reports = verify_files(log_dir, keys, paths)
    if output != "text":
        emit_documents([_document(r) for r in reports], output, as_list=True)
    else:
        _print(reports)
    if not all(r.intact for r in reports):
        sys.exit(1)


async def _cluster_keys(admin: AdminApi) -> dict[str, PublicKey]:
    cluster = (await admin.status()).get("cluster")
    if not cluster:
        raise BadParameter("this cluster has not started yet: it has no checkpoint key")
    doc = await admin.get_one("CertAuthority", f"jwt.{cluster}")
    return audit_keys(doc["spec"])


def _keys_from_files(files: tuple[Path, ...]) -> dict[str, PublicKey]:
    keys: dict[str, PublicKey] = {}
    for path in files:
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("{"):
            try:
                jwks = json.loads(text)
            except ValueError as err:
                raise BadParameter(f"{path}: not a JWKS: {err}") from None
            items = jwks.get("keys") if isinstance(jwks, Mapping) else None
            if not isinstance(items, list):
                raise BadParameter(f"{path}: a JWKS needs a 'keys' list")
            for jwk in items:
                key = public_key_from_jwk(jwk)
                keys[str(jwk.get("kid") or jwk_thumbprint(key))] = key
        else:
            key = load_public_key(text)
            keys[jwk_thumbprint(key)] = key
    return keys


def _verify_postgres(dsn_file: str, keys: Mapping[str, PublicKey],
                     targets: tuple[str, ...]) -> list[FileReport]:
    with PostgresLog(read_dsn(dsn_file or None)) as log:
        days = log.days()
        if not days:
            raise BadParameter(f"no audit events in {log.description}")
        chosen: list[date] | None = None
        if targets:
            chosen = []
            for target in targets:
                day = _day(target)
                if day is None or day not in days:
                    raise BadParameter(f"no audit log day {target} in {log.description} (give a "
                                       "day as YYYY-MM-DD)")
                chosen.append(day)
        return verify_postgres(log, keys, chosen)


def _day(target: str) -> date | None:
    """The day ``target`` names: ``YYYY-MM-DD`` or its day file's name."""
    match = DAY_FILE_PATTERN.match(Path(target).name if target.endswith(".jsonl")
                                   else f"{target}.jsonl")
    try:
        return date.fromisoformat(match.group(1)) if match is not None else None
    except ValueError:
        return None


def _targets(log_dir: Path, targets: tuple[str, ...]) -> list[Path] | None:
    if not targets:
        if not day_files(log_dir):
            raise BadParameter(f"no audit log files in {log_dir}")
        return None
    paths: list[Path] = []
    for target in targets:
        is_day = DAY_FILE_PATTERN.match(f"{target}.jsonl") is not None
        path = log_dir / f"{target}.jsonl" if is_day else Path(target)
        if not path.is_file():
            raise BadParameter(f"no audit log file {path} (give a day as YYYY-MM-DD or a "
                               "day file such as 2026-11-24.jsonl)")
        if not DAY_FILE_PATTERN.match(path.name):
            raise BadParameter(f"{path.name} is not a day file's name (YYYY-MM-DD.jsonl): the "
                               "chain of a day file starts from its name")
        paths.append(path)
    return paths


def _document(report: FileReport) -> dict[str, Any]:
    problem = report.problem
    return {
        "file": str(report.path), "intact": report.intact, "lines": report.lines,
        "events": report.events, "checkpoints": report.checkpoints,
        "signed_through": report.signed_through, "keys": sorted(report.kids),
        "notes": list(report.notes),
        "problem": None if problem is None else {
            "kind": problem.kind, "line": problem.line, "message": problem.message},
    }


def _print(reports: list[FileReport]) -> None:
    for report in reports:
        name = report.path.name
        if report.problem is not None:
            click.echo(f"BROKEN  {name} line {report.problem.line} ({report.problem.kind}): "
                       f"{report.problem.message}")
        else:
            click.echo(f"ok      {name}: {report.lines} lines, {report.events} events, "
                       f"{report.checkpoints} checkpoints, signed through line "
                       f"{report.signed_through}")
        for note in report.notes:
            click.echo(f"        note: {note}")
    broken = [r for r in reports if not r.intact]
    events = sum(r.events for r in reports)
    kids = sorted(set().union(*(r.kids for r in reports)))
    if broken:
        click.echo(f"audit log BROKEN: {len(broken)} of {len(reports)} file(s); the first "
                   f"broken line of each is shown above", err=True)
    else:
        click.echo(f"audit log intact: {len(reports)} file(s), {events} events, checkpoints "
                   f"signed by {', '.join(kids) or 'no key'}")
