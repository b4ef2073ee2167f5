"""``lmctl top``: a live view of one Limen process's metrics, refreshing in place (as
``tctl top``)::

    limen 127.0.0.1:3000  (0.1.0)                    refreshed every 2s, Ctrl-C to quit
    sessions         active ssh 1 · postgres 0      total ssh 12 · postgres 3
    tunnel agents    3 connected, 1 reconnect, 240 heartbeats
    logins           41 ok, 2 failed               0.50/s
    access           120 allowed, 4 denied
    certificates     user 41 · db 3
    audit log        620 written, 0 failed
    backend          5120 operations, mean 0.8 ms
    git sync         ok, commit of 2026-12-06 18:30:00Z applied, last try 3s ago

It reads ``http://ADDRESS/metrics`` (``limen start --diag-addr``; by default the address in
DATA_DIR/listeners.json, else 127.0.0.1:3000) through ``limen.diag.scrape``. ``--once``
prints one frame (``-o json``: the numbers) and exits, for scripts and tests.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click

from limen.cli.common import handle_errors
from limen.diag.scrape import Snapshot, fetch_samples, snapshot

__all__ = ["top"]

DEFAULT_DIAG_ADDR = "127.0.0.1:3000"
_CLEAR = "\x1b[H\x1b[2J"


@click.command()
@click.option("--diag-addr", help="The process's diagnostics listener HOST:PORT (default: "
              "the one in DATA_DIR/listeners.json, else 127.0.0.1:3000).")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="With --once: json prints the numbers.")
@click.pass_context
@handle_errors
def top(ctx: click.Context, diag_addr: str | None, interval: float, once: bool,
        output: str) -> None:
    """A live view of a process's metrics: sessions, agents, logins/s, Git sync."""
    address = diag_addr or _listed_address(Path(ctx.find_root().params["data_dir"]))
    previous: tuple[float, Snapshot] | None = None
    if once:
        current = snapshot(fetch_samples(address))
        if output == "json":
            click.echo(json.dumps(current.to_dict(), indent=2, sort_keys=True))
        else:
            click.echo(render(address, current, None, interval=None))
        return
    live = sys.stdout.isatty()
    try:
        while True:
            now = time.monotonic()
            current = snapshot(fetch_samples(address))
            frame = render(address, current, _rate(previous, now, current), interval=interval)
            click.echo((_CLEAR if live else "") + frame, nl=not live)
            previous = (now, current)
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo("")


def _listed_address(data_dir: Path) -> str:
    try:
        listed = json.loads((data_dir / "listeners.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DEFAULT_DIAG_ADDR
    return str(listed.get("diag") or DEFAULT_DIAG_ADDR)


def _rate(previous: tuple[float, Snapshot] | None, now: float, current: Snapshot) -> float | None:
    """Logins per second since the previous frame."""
    if previous is None or now <= previous[0]:
        return None
    done = sum(current.logins.values()) - sum(previous[1].logins.values())
    return max(done, 0) / (now - previous[0])


def render(address: str, snap: Snapshot, logins_per_second: float | None, *,
           interval: float | None) -> str:
    """One frame of text (see the module doc)."""
    refresh = f"refreshed every {interval:g}s, Ctrl-C to quit" if interval else ""
    rate = f"   {logins_per_second:.2f}/s" if logins_per_second is not None else ""
    mean_ms = 1000 * snap.backend_seconds / snap.backend_ops if snap.backend_ops else 0.0
    rows = [
        (f"limen {address}  ({snap.version or '?'})", refresh),
        ("sessions", f"active {_split(snap.sessions_active)}   "
                     f"total {_split(snap.sessions_total)}"),
        ("tunnel agents", f"{snap.tunnel_agents:g} connected, {snap.tunnel_reconnects:g} "
                          f"reconnects, {snap.heartbeats:g} heartbeats"),
        ("logins", f"{snap.logins.get('success', 0):g} ok, "
                   f"{snap.logins.get('failure', 0):g} failed{rate}"),
        ("access", f"{snap.decisions.get('allowed', 0):g} allowed, "
                   f"{snap.decisions.get('denied', 0):g} denied"),
        ("certificates", _split(snap.certificates)),
        ("audit log", f"{snap.audit_written:g} written, {snap.audit_failures:g} failed"),
        ("backend", f"{snap.backend_ops:g} operations, mean {mean_ms:.1f} ms"),
        ("git sync", _sync(snap)),
    ]
    return "\n".join(f"{name:<16} {text}".rstrip() for name, text in rows)


def _split(values: dict[str, float]) -> str:
    return " · ".join(f"{k} {v:g}" for k, v in sorted(values.items())) or "none"


def _sync(snap: Snapshot) -> str:
    sync = snap.git_sync
    if not sync or not sync.get("attempts"):
        return "not syncing"
    state = "ok" if sync["last_attempt_ok"] else "FAILING"
    applied = sync["last_applied_commit_time"]
    when = datetime.fromtimestamp(applied, UTC).strftime("%Y-%m-%d %H:%M:%SZ") if applied \
        else "none"
    ago = time.time() - sync["last_attempt_time"]
    return f"{state}, commit of {when} applied, last try {ago:.0f}s ago"
