"""Shared CLI plumbing: error reporting, exit codes, ``-o`` output formats.

Called by every command module in ``limen.cli``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import click

from limen.errors import LimenError, exit_code

__all__ = ["OUTPUT_OPTION", "emit_documents", "fail", "handle_errors", "print_table"]

F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_OPTION = click.option(
    "-o", "--output", "output", type=click.Choice(["text", "yaml", "json"]), default="text",
    show_default=True, help="Output format.",
)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Turn Limen errors into one clear sentence on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context(silent=True)
        debug = bool(ctx and ctx.find_root().params.get("debug"))
        try:
            return func(*args, **kwargs)
        except LimenError as err:
            if debug:
                traceback.print_exc()
            fail(str(err), exit_code(err))
        except KeyboardInterrupt:
            sys.exit(130)
        except BrokenPipeError:  # `lmctl get roles | head`: the reader is gone, stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as err:
            if debug:
                traceback.print_exc()
            fail(f"{err.strerror or err} ({getattr(err, 'filename', '') or 'I/O'})", 1)

    return wrapper  # type: ignore[return-value]


def emit_documents(documents: Sequence[Mapping[str, Any]], output: str, *,
                   as_list: bool = False) -> None:
    """Print documents as a YAML stream (re-appliable with ``lmctl apply -f``) or JSON: one
    document as itself, several (or any number when ``as_list``, e.g. a listing that found
    one) as a ``List`` like kubectl's."""
    if output == "json":
        payload: Any = documents[0] if len(documents) == 1 and not as_list else {
            "apiVersion": "v1", "kind": "List", "items": list(documents)}
        click.echo(json.dumps(payload, indent=2, sort_keys=False))
    else:
        import yaml  # here: a JSON or table answer does not load PyYAML

        click.echo(yaml.safe_dump_all(documents, sort_keys=False, default_flow_style=False),
                   nl=False)


def emit_listing(items: Sequence[Mapping[str, Any]], output: str, headers: Sequence[str],
                 rows: Callable[[Sequence[Mapping[str, Any]]], Sequence[Sequence[str]]]) -> None:
    """A listing command's output: a table of ``rows(items)``, or with ``-o json|yaml`` the
    items as a ``List`` (see :func:`emit_documents`)."""
    if output != "text":
        emit_documents(items, output, as_list=True)
    else:
        print_table(headers, rows(items))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    for row in (headers, *rows):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
