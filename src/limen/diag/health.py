"""Readiness: named checks that say whether a process can do its job, and why not.

A :class:`Check` is a name and an async callable returning ``None`` (ready) or the reason it
is not (``"backend: connection refused"``); a check that raises or runs past its deadline
fails with that as the reason. The composition (``limen.cli.diag_wiring``) builds them from
the components it started: auth reaches its backend and holds its CA, a proxy reaches auth
and serves its listeners, an agent holds a tunnel, the Git sync applied within its interval.
Served at ``/readyz`` by :class:`~limen.diag.listener.DiagListener`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

__all__ = ["Check", "CheckResult", "Readiness"]

CHECK_TIMEOUT = 3.0
"""A check still running after this long fails (``/readyz`` answers within it)."""


@dataclass(frozen=True)
class Check:
    name: str
    probe: Callable[[], Awaitable[str | None]]
    """``None``: ready; a string: why not."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None


class Readiness:
    """The checks of one process, run together on each ``/readyz``."""

    def __init__(self, checks: Sequence[Check] = (), *, timeout: float = CHECK_TIMEOUT) -> None:
        self.checks = list(checks)
        self.timeout = timeout

    def add(self, check: Check) -> None:
        self.checks.append(check)

    async def run(self, exclude: Collection[str] = ()) -> list[CheckResult]:
        """Every check but those named in ``exclude``, concurrently."""
        return list(await asyncio.gather(*(self._run(c) for c in self.checks
                                           if c.name not in exclude)))

    async def _run(self, check: Check) -> CheckResult:
        try:
            async with asyncio.timeout(self.timeout):
                return CheckResult(check.name, await check.probe())
        except TimeoutError:
            return CheckResult(check.name, f"no answer within {self.timeout:g}s")
        except Exception as err:  # a check's failure is its answer
            return CheckResult(check.name, str(err) or type(err).__name__)
