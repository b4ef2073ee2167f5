"""The ProxyCommand's argument reader (``limen.client.proxyssh_command.parse_args``): the
script ``lmsh config`` writes and ``lmsh``'s entry point (``lmsh proxy ssh``, before click)
serve the lines it reads; every other spelling is left to click."""

from __future__ import annotations

import pytest

from limen.client.proxyssh_command import parse_args


@pytest.mark.parametrize(("args", "parsed"), [
    (["--proxy", "p:3080", "--cluster", "demo", "root@web1.demo:3022"],
     ("p:3080", "demo", "root@web1.demo:3022")),
    (["--proxy=p:3080", "root@web1:22"], ("p:3080", None, "root@web1:22")),
    (["root@web1:22"], (None, None, "root@web1:22")),
])
def test_the_written_lines_are_read(args: list[str], parsed: tuple[object, ...]) -> None:
    assert parse_args(args) == parsed


@pytest.mark.parametrize("args", [
    [], ["--help"], ["--proxy"], ["--proxy", "p", "--proxy", "q", "t"], ["a", "b"],
    ["--debug", "t"], ["-x", "t"],
])
def test_anything_else_goes_to_click(args: list[str]) -> None:
    assert parse_args(args) is None
