"""lmsh ssh argument splitting (OpenSSH's grammar) and node selection by labels."""

from __future__ import annotations

import pytest

from limen.client.nodes import is_label_selector, matching, parse_selector
from limen.client.ssh_command import split_ssh_args
from limen.errors import BadParameter


@pytest.mark.parametrize(("args", "expected"), [
    (("web1",), ([], None, "web1", [])),
    (("alice@web1", "uptime", "-a"), ([], None, "alice@web1", ["uptime", "-a"])),
    (("-l", "bob", "web1", "id"), ([], "bob", "web1", ["id"])),
    (("-lbob", "web1"), ([], "bob", "web1", [])),
    (("-L", "8080:localhost:80", "-A", "-t", "web1"),
     (["-L", "8080:localhost:80", "-A", "-t"], None, "web1", [])),
    (("-o", "ServerAliveInterval=5", "--", "web1", "ls", "-l"),
     (["-o", "ServerAliveInterval=5"], None, "web1", ["ls", "-l"])),
])
def test_split_ssh_args(args: tuple[str, ...], expected: tuple[object, ...]) -> None:
    assert split_ssh_args(args) == expected


@pytest.mark.parametrize("args", [(), ("-L",), ("-A", "--")])
def test_split_ssh_args_errors(args: tuple[str, ...]) -> None:
    with pytest.raises(BadParameter):
        split_ssh_args(args)


def test_label_selection() -> None:
    nodes = [{"hostname": "a", "labels": {"env": "dev", "team": "x"}},
             {"hostname": "b", "labels": {"env": "prod"}}]
    assert is_label_selector("env=dev")
    assert not is_label_selector("alice@web1")
    assert [n["hostname"] for n in matching(nodes, parse_selector(["env=dev,team=x"]))] == ["a"]
    assert matching(nodes, parse_selector(["env=qa"])) == []
    with pytest.raises(BadParameter):
        parse_selector(["=x"])
