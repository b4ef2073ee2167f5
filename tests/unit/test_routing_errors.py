"""The texts a user reads when a target cannot be reached, and the pieces around them: the
ambiguity message (ids, capped), the proxy's login check before dialling, ``lmsh proxy ssh``'s
one-line reason and its stdin of any kind, ``node.nodename`` in the settings and a node that
was renamed since it joined, and the per-request ``sftp-server`` lookup."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import time
from pathlib import Path

import pytest

from limen.agents.joining import credentials_dir, load_or_join
from limen.agents.node.ssh_server import sftp_lookup
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.ca.host_credentials import HostCredentials
from limen.ca.identity import Identity, SystemRole
from limen.ca.keys import generate_private_key, private_key_to_pem, public_key_to_openssh
from limen.client.proxyssh import one_line, open_stdin
from limen.config import ClusterSettings, JoinSettings, NodeSettings, Settings, load_settings
from limen.errors import AccessDenied, BadParameter
from limen.events.emitter import MemoryEmitter
from limen.proxy.routing import Node, resolve
from limen.proxy.sshproxy import _check_login
from limen.rbac.checker import AccessChecker

# ---------------------------------------------------------------------- ambiguity


def test_twins_are_listed_by_id_and_the_id_resolves() -> None:
    twins = [Node("vm", host_id=f"id-{n}", connected_here=True) for n in (2, 1)]
    with pytest.raises(BadParameter) as caught:
        resolve("vm", 3022, twins)
    assert str(caught.value) == "'vm' matches 2 nodes: use one of id-1, id-2"
    assert resolve("id-2", 3022, twins) is twins[0]


def test_an_agentless_twin_is_named_by_its_resource_name() -> None:
    nodes = [Node("vm", host_id="id-1", connected_here=True),
             Node("vm-legacy", hostnames=("vm",), address="10.0.0.9:22", agentless=True)]
    with pytest.raises(BadParameter, match=r"^'vm' matches 2 nodes: use one of id-1, "
                                           r"vm-legacy$"):
        resolve("vm", 22, nodes)


def test_a_long_ambiguity_is_cut_after_ten_ids() -> None:
    nodes = [Node("web", {"env": "dev"}, host_id=f"id-{n:02}") for n in range(12)]
    with pytest.raises(BadParameter) as caught:
        resolve("env=dev", 22, nodes)
    ids = ", ".join(f"id-{n:02}" for n in range(10))
    assert str(caught.value) == f"'env=dev' matches 12 nodes: use one of {ids}, ..."


# ---------------------------------------------------------------------- login at the proxy

ROLE = {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": "dev"},
        "spec": {"allow": {"logins": ["{{internal.logins}}"], "node_labels": {"env": "dev"}}}}


def _checker(logins: tuple[str, ...],
             trait: tuple[str, ...] | None = None) -> tuple[Identity, AccessChecker]:
    """An identity whose certificate holds ``logins``, roles expanded with ``trait``."""
    from limen.api.resources import Resource

    identity = Identity(username="alice", cluster="c", roles=("dev",), logins=logins,
                        traits={"logins": trait or logins})
    role = Resource.from_document(ROLE)
    return identity, AccessChecker.for_user("alice", ("dev",), identity.traits, {"dev": role})


def test_a_login_the_roles_do_not_allow_is_refused_with_the_allowed_ones() -> None:
    identity, checker = _checker(("alice", "deploy"))
    node = Node("vm", {"env": "dev"}, host_id="id-1")
    _check_login(checker.roles, identity, node, "deploy")  # allowed: no error
    with pytest.raises(AccessDenied) as caught:
        _check_login(checker.roles, identity, node, "root")
    assert str(caught.value) == "login 'root' is not allowed on 'vm' (allowed: alice, deploy)"


def test_a_login_outside_the_certificate_is_refused_even_if_a_role_names_it() -> None:
    identity, checker = _checker(("alice",), trait=("alice", "bob"))
    assert checker.roles.check_ssh({"env": "dev"}, "bob", mfa_verified=True).allowed
    with pytest.raises(AccessDenied, match=r"login 'bob' is not allowed on 'vm' "
                                           r"\(allowed: alice\)"):
        _check_login(checker.roles, identity, Node("vm", {"env": "dev"}), "bob")


# ---------------------------------------------------------------------- the ProxyCommand


@pytest.mark.parametrize(("text", "line"), [
    ("unknown node 'x'\n", "unknown node 'x'"),
    ("two\nlines\r\n", "two lines"),
    ("\x1b]0;title\x07bell", "]0;titlebell"),  # no terminal control from the network
])
def test_the_reason_is_one_printable_line(text: str, line: str) -> None:
    assert one_line(text) == line


async def _read_all(read: object) -> bytes:
    chunks = []
    while data := await read():  # type: ignore[operator]
        chunks.append(data)
    return b"".join(chunks)


async def test_stdin_from_dev_null_a_file_or_nothing(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    big = os.urandom(700_000)
    (tmp_path / "input").write_bytes(big)
    for path, expected in ((os.devnull, b""), (str(tmp_path / "input"), big)):
        with open(path, "rb") as raw:  # noqa: ASYNC230 - a descriptor for the reader to own
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
            assert await asyncio.wait_for(_read_all(await open_stdin()), 10) == expected
    monkeypatch.setattr(sys, "stdin", None)  # descriptor 0 closed when lmsh started
    assert await _read_all(await open_stdin()) == b""


async def test_stdin_from_a_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    read_fd, write_fd = os.pipe()
    with open(read_fd, "rb") as raw:  # noqa: ASYNC230 - the event loop reads it
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
        read = await open_stdin()
        os.write(write_fd, b"through the loop")
        os.close(write_fd)
        assert await asyncio.wait_for(_read_all(read), 10) == b"through the loop"


# ---------------------------------------------------------------------- node names


@pytest.mark.parametrize("name", ["web-1", "Box_2", "a"])
def test_nodename_setting(name: str) -> None:
    assert load_settings(env={}, overrides={"node": {"nodename": name}}).node.nodename == name
    assert load_settings(env={"LIMEN_NODENAME": name}).node.nodename == name


@pytest.mark.parametrize("name", ["web1.example", "env=dev", "root@web", "web:22", "-web", ""])
def test_nodename_that_would_read_as_something_else_is_refused(name: str) -> None:
    with pytest.raises(BadParameter, match=r"config node.nodename"):
        load_settings(env={}, overrides={"node": {"nodename": name}})


async def test_a_renamed_node_needs_a_token_to_join_again(tmp_path: Path) -> None:
    auth = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), MemoryEmitter(),
                      clock=time.time)
    await auth.start()
    key = generate_private_key()
    certs = auth.issue_host_certs("host-1", "old", SystemRole.NODE,
                                  public_key_to_openssh(key.public_key()), ["127.0.0.1"])
    saved = HostCredentials(
        cluster="unit", host_id="host-1", role="node", hostname="old",
        private_key_pem=private_key_to_pem(key).encode(), tls_cert_pem=certs.tls_cert,
        tls_ca_pem=certs.tls_cas.encode(), ssh_cert=certs.ssh_cert,
        user_ca_keys=tuple(certs.user_ca_keys), host_ca_keys=tuple(certs.host_ca_keys))
    data_dir = tmp_path / "data"
    saved.save(credentials_dir(data_dir))
    same = Settings(data_dir=data_dir, node=NodeSettings(nodename="old"))
    assert await load_or_join(same, SystemRole.NODE, "host-1") == saved
    renamed = Settings(data_dir=data_dir, node=NodeSettings(nodename="new"),
                       join=JoinSettings())
    with pytest.raises(BadParameter, match=r"name this node 'old', not 'new': give --token"):
        await load_or_join(renamed, SystemRole.NODE, "host-1")


# ---------------------------------------------------------------------- sftp-server


def test_sftp_server_is_looked_up_at_each_request(tmp_path: Path) -> None:
    path = tmp_path / "sftp-server"
    lookup = sftp_lookup(str(path))
    assert lookup() is None
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    assert lookup() == str(path)
    path.unlink()
    assert lookup() is None
