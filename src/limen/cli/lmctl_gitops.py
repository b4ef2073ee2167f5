"""``lmctl gitops``: check a change to the access repository offline, and see what is live.

``lmctl gitops plan PATH [--against DIR_OR_REF]`` loads and validates every document under PATH
exactly as the sync does (symbolic links skipped, each named in a warning on stderr), plans it
with origin ``git`` (create, update, prune), prints the diff per object, and exits 1 if a
document is invalid or an object it declares belongs to another origin — the pull-request
check of docs/gitops.md. ``--against``:

* a data directory: what the cluster of that directory holds (through its auth API when it
  runs, else its store), so objects owned by ``api`` or ``kubernetes`` show as conflicts;
* a Git ref of the repository holding PATH (``origin/main``): the documents at that ref;
* nothing: an empty cluster (everything is created).

``--access`` adds the access review (:mod:`limen.gitops.access_diff`): who gains and loses
which login, database user, Kubernetes group, app, leaf cluster or admin rule, evaluated over
an inventory (``--inventory FILE`` from ``lmctl inventory export``, else the cluster of
``--against DIR`` or of ``lmctl --auth HOST:PORT -i DIR``); ``--format markdown`` prints it as
a pull-request comment and ``--fail-on risky`` exits 4 when it adds a flagged grant.

``lmctl gitops status`` shows the live commit, the last attempt with its errors and the access
request reviews merged in Git that were refused. Both take ``-o json|yaml``. The plan leaves
out ``AccessRequestReview`` documents: they are reviews, not objects (``limen.gitops.reviews``).
Registered on the ``lmctl`` group by ``limen.cli.lmctl``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from limen.api.access_request_review import without_reviews
from limen.api.loader import load_path
from limen.api.resources import PUBLIC_KINDS, Origin, Resource
from limen.api.validation import validate
from limen.backend.sqlite import DB_FILENAME
from limen.cli.admin_api import AdminApi
from limen.cli.common import OUTPUT_OPTION, emit_documents, handle_errors
from limen.cli.lmctl_run import run_admin
from limen.errors import BadParameter, ValidationFailed
from limen.gitops.access_diff import (
    AccessDiff,
    AccessState,
    access_diff,
    after_objects,
    node_targets,
)
from limen.gitops.access_diff_format import access_json, render_markdown, render_text
from limen.gitops.access_diff_inventory import read_inventory
from limen.gitops.planfmt import format_value, render_plan
from limen.gitops.repository import documents_at_ref
from limen.rbac.access_index import Target
from limen.services.plan import Plan, compute_plan

__all__ = ["EXIT_RISKY", "gitops"]

EXIT_RISKY = 4
"""Exit status of ``plan --access --fail-on risky`` when the change adds a flagged grant."""

@click.group()
def gitops() -> None:
    """The Git sync: plan a change offline, show the live commit."""


@gitops.command("plan")
@click.argument("path", type=click.Path(path_type=Path, exists=True))
@click.option("--against", metavar="DIR_OR_REF",
              help="A data directory (what that cluster holds) or a Git ref of PATH's "
                   "repository (the documents there). Default: an empty cluster.")
@click.option("--access", is_flag=True,
              help="Also print who gains and loses access to what (the access review).")
@click.option("--inventory", "inventory_file", type=click.Path(path_type=Path, exists=True,
                                                               dir_okay=False),
              help="An `lmctl inventory export` file: the users, roles and resources the "
                   "access review evaluates (no network needed).")
@click.option("--format", "fmt", type=click.Choice(["text", "yaml", "json", "markdown"]),
              help="Output format (overrides -o); markdown: a pull-request comment "
                   "(with --access).")
@click.option("--fail-on", "fail_on", type=click.Choice(["risky"]),
              help=f"risky: exit {EXIT_RISKY} when the change adds a flagged grant.")
@OUTPUT_OPTION
@handle_errors
def plan(path: Path, against: str | None, access: bool, inventory_file: Path | None,
         fmt: str | None, fail_on: str | None, output: str) -> None:
    """Validate PATH and print the create/update/delete plan; exit 1 if anything is invalid
    (with --fail-on risky, 4 if the access review flags a grant it adds)."""
    output = fmt or output
    if (output == "markdown" or fail_on or inventory_file) and not access:
        raise click.UsageError("--format markdown, --fail-on and --inventory need --access")
    try:
        desired = validate(without_reviews(load_path(path, on_skipped_link=_warn)))
    except ValidationFailed as err:
        _report_invalid(err, "json" if output == "markdown" else output)
        sys.exit(1)
    current = _current(path, against)
    result = compute_plan(desired, current, Origin.GIT, prune=True, kinds=PUBLIC_KINDS)
    diff = _access_review(desired, current, against, inventory_file) if access else None
    document = _plan_json(result)
    if diff is not None:
        document["access"] = access_json(diff)
    if output == "markdown" and diff is not None:
        click.echo(render_markdown(diff, render_plan(result, created_fields=True)))
    elif output != "text":
        emit_documents([document], output)
    else:
        for line in render_plan(result, created_fields=True):
            click.echo(line)
        if diff is not None:
            click.echo("")
            for line in render_text(diff):
                click.echo(line)
    if result.conflicts:
        sys.exit(1)
    if fail_on == "risky" and diff is not None and diff.risky:
        sys.exit(EXIT_RISKY)


def _root_auth() -> bool:
    """``lmctl --auth HOST:PORT -i DIR ...``: a running cluster's auth API was named."""
    return bool(click.get_current_context().find_root().params.get("auth"))


def _access_review(desired: list[Resource], current: list[Resource], against: str | None,
                   inventory_file: Path | None) -> AccessDiff:
    """Before: the inventory (the file, else the cluster of --against DIR or of ``lmctl
    --auth``) with --against's objects over it; after: the same once the sync applied PATH."""
    known: list[Resource] = []
    nodes: list[Target] = []
    if inventory_file is not None:
        known, nodes = read_inventory(inventory_file)
    elif (against and Path(against).is_dir()) or _root_auth():
        from limen.cli.lmctl_inventory import collect_inventory

        live = Path(against) if against and Path(against).is_dir() else None
        document = run_admin(collect_inventory, data_dir=live)
        known = [Resource.from_document(doc) for doc in document["objects"]]
        nodes = node_targets(document["nodes"])
    by_key = {(r.kind, r.name): r for r in known}
    by_key.update({(r.kind, r.name): r for r in current})
    before = list(by_key.values())
    after = after_objects(before, [r.with_origin(Origin.GIT) for r in desired],
                          Origin.GIT.value)
    return access_diff(AccessState.build(before, nodes), AccessState.build(after, nodes))


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def _report_invalid(err: ValidationFailed, output: str) -> None:
    if output != "text":
        emit_documents([{"valid": False, "errors": [str(e) for e in err.errors]}], output)
    count = len(err.errors)
    click.echo(f"error: {count} problem{'s' if count != 1 else ''} found; nothing would be "
               "applied:", err=True)
    for error in err.errors:
        click.echo(f"  {error}", err=True)


def _current(path: Path, against: str | None) -> list[Resource]:
    if not against:
        return []
    candidate = Path(against)
    if candidate.is_dir():
        if not (candidate / DB_FILENAME).exists():
            raise BadParameter(f"{against} is not a Limen data directory (no {DB_FILENAME})")
        return run_admin(_cluster_objects, data_dir=candidate)
    try:
        documents = documents_at_ref(path, against)
        resources = validate(without_reviews(documents))
    except ValidationFailed as err:
        raise BadParameter(f"the documents at {against} are invalid themselves:\n{err}") from None
    return [r.with_origin(Origin.GIT) for r in resources]


async def _cluster_objects(admin: AdminApi) -> list[Resource]:
    found: list[Resource] = []
    for kind in PUBLIC_KINDS:
        found.extend(Resource.from_document(doc) for doc in await admin.list_kind(kind.value))
    return found


def _plan_json(result: Plan) -> dict[str, Any]:
    return {
        "valid": not result.conflicts,
        "summary": result.summary(),
        "conflicts": list(result.conflicts),
        "changes": [
            {"kind": e.kind.value, "name": e.name, "action": e.action.value,
             "fields": [{"path": c.path, "old": c.old, "new": c.new} for c in e.changes]}
            for e in result.changes
        ],
    }


@gitops.command("status")
@OUTPUT_OPTION
@handle_errors
def status(output: str) -> None:
    """The live commit, and the last attempt with its errors."""
    info = run_admin(lambda admin: admin.gitops_status())
    if output != "text":
        emit_documents([info], output)
        return
    click.echo(f"Source:       {info.get('source')} ({info.get('mode')}, branch "
               f"{info.get('branch')}, path {info.get('path') or '/'}, every "
               f"{info.get('interval_seconds')}s)")
    live = info.get("live")
    if live:
        click.echo(f"Live:         {_describe(live)}")
        click.echo(f"              applied {live.get('applied_at')}: {live.get('summary')}")
    else:
        click.echo("Live:         nothing applied yet")
    for review in info.get("reviews") or []:
        if not review.get("ok"):
            click.echo(f"Review:       {review.get('file')} (commit "
                       f"{str(review.get('commit'))[:12]}, merged by {review.get('merger')}) "
                       f"refused: {review.get('reason')}")
    for ca_type, entry in sorted((info.get("rotation_requests") or {}).items()):
        if entry.get("state") == "Refused":  # spec.rotation on the Cluster document
            click.echo(f"Rotation:     {ca_type} CA request {entry.get('id')} refused: "
                       f"{entry.get('message')}")
    last = info.get("last_attempt")
    if not last:
        return
    verdict = "applied" if last.get("ok") else "REJECTED or failed"
    click.echo(f"Last attempt: {_describe(last) if last.get('sha') else '(no revision read)'}")
    click.echo(f"              at {last.get('time')}: {verdict}")
    for error in last.get("errors") or []:
        click.echo(f"  {error}")


def _describe(revision: dict[str, Any]) -> str:
    sha = str(revision.get("sha") or "")
    text = f"{sha} {revision['content_hash'][:19]}" if revision.get("content_hash") else sha[:12]
    if revision.get("message"):
        text += f" {format_value(revision['message'])}"
    if revision.get("author"):
        text += f" by {revision['author']}"
    return text
