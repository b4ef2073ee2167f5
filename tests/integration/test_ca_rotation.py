"""CA rotation without downtime (issue #18), with real processes: auth, a proxy and a node
agent as three ``limen start`` processes (the layout of test_agents_apart), a user on ``lmsh``
and OpenSSH, and a long-running ``ssh`` session open across every phase.

The user and host CAs are rotated together, by hand, through init → update_clients →
update_servers → standby: the open session survives, new logins and new ssh sessions work in
each phase, the proxy and the node renew their host certificates from the new key without a
restart, and a certificate from before the rotation is refused after standby. A second
rotation of the user CA is rolled back: certificates of the key rolled back to work, those of
the dropped key are refused. Every phase change is audited (``ca.rotation``)."""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .apart_cluster import apart_cluster, password_login
from .cluster import LimenCluster, LimenUser, describe, wait_for
from .echo_session import EchoSession
from .test_agents_apart import EXAMPLE_ROLES, _config

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
PROPAGATION = 15.0
"""Seconds the proxy and the node have to follow a phase (they poll auth every 3 s)."""
LAST: list[subprocess.CompletedProcess[str]] = []
"""The last ssh attempt, shown when a wait for one times out."""


@dataclass
class Layout:
    auth: LimenCluster
    proxy: LimenCluster
    node: LimenCluster
    user: LimenUser

    def rotate(self, *args: str) -> None:
        self.auth.lmctl("auth", "rotate", *args)

    def phases(self) -> dict[str, str]:
        status = self.auth.status()["ca_rotation"]
        return {t: s["phase"] for t, s in status.items()}


def _ssh_ok(user: LimenUser, marker: str) -> bool:
    result = user.lmsh("ssh", f"{LOGIN}@{HOST}", f"echo {marker}", check=False)
    LAST[:] = [result]
    return result.returncode == 0 and result.stdout.strip() == marker


def _new_session(layout: Layout, user: LimenUser, marker: str, what: str) -> None:
    try:
        wait_for(lambda: _ssh_ok(user, marker), PROPAGATION, what)
    except AssertionError as err:
        logs = "".join(f"--- {c.name} {c.root.name}\n{c.output()[-3000:]}"
                       for c in (layout.proxy, layout.node))
        raise AssertionError(f"{err}\n{describe(LAST[0])}{logs}") from None


def _refused(user: LimenUser) -> bool:
    result = user.lmsh("ssh", f"{LOGIN}@{HOST}", "echo in", check=False)
    return result.returncode != 0 and "in" not in result.stdout.split()


def _snapshot(user: LimenUser, into: Path) -> LimenUser:
    """A copy of ``user``'s lmsh state: the certificates they hold now, kept for later."""
    shutil.copytree(user.home, into)
    return LimenUser(user.name, into, user.proxy, password=user.password)


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    with apart_cluster(tmp_path_factory.mktemp("rotation"), "rot", "rita") as apart:
        yield Layout(*apart)


def _host_cert(cluster: LimenCluster) -> str:
    return (cluster.data_dir / "host" / "ssh-cert.pub").read_text(encoding="utf-8")


def test_full_rotation_with_an_open_session(layout: Layout, tmp_path: Path) -> None:
    user = layout.user
    before = _snapshot(user, tmp_path / "before")
    session = EchoSession(user, f"{LOGIN}@{HOST}")
    try:
        session.echo("start")
        proxy_cert, node_cert = _host_cert(layout.proxy), _host_cert(layout.node)
        for phase in ("init", "update_clients", "update_servers", "standby"):
            for ca_type in ("user", "host"):
                layout.rotate("--type", ca_type, *(
                    ["--manual"] if phase == "init" else ["--phase", phase]))
            assert layout.phases() == {"user": phase, "host": phase, "db": "standby",
                                       "jwt": "standby"}  # the others are not touched
            password_login(user)  # a new login in every phase
            _new_session(layout, user, f"in-{phase}", f"a new ssh session in phase {phase}")
            session.echo(phase)  # the session opened before the rotation still works
            if phase == "update_servers":  # both renewed from the new host key, no restart
                wait_for(lambda: _host_cert(layout.proxy) != proxy_cert
                         and _host_cert(layout.node) != node_cert, PROPAGATION,
                         "the proxy and the node to renew their host certificates")
                assert layout.proxy.running
                assert layout.node.running
        session.echo("end")
    finally:
        session.close()
    wait_for(lambda: _refused(before), PROPAGATION,
             "a certificate from before the rotation to be refused")
    assert _ssh_ok(user, "after")
    moves = [(e["ca_type"], e["from"], e["to"], e["user"])
             for e in layout.auth.audit("ca.rotation") if e["success"]]
    assert [m for m in moves if m[0] == "user"] == [
        ("user", "standby", "init", "admin"), ("user", "init", "update_clients", "admin"),
        ("user", "update_clients", "update_servers", "admin"),
        ("user", "update_servers", "standby", "admin")]
    renewals = [e for e in layout.auth.audit("cert.create") if e.get("renewal")]
    assert len(renewals) >= 2


def test_rollback_restores_the_old_user_ca(layout: Layout, tmp_path: Path) -> None:
    user = layout.user
    password_login(user)
    current = _snapshot(user, tmp_path / "current")
    layout.rotate("--type", "user", "--manual")
    layout.rotate("--type", "user", "--phase", "update_clients")
    password_login(user)  # signed by the new key
    _new_session(layout, user, "new-key", "ssh with the new key")
    layout.rotate("--rollback")
    layout.rotate("--type", "user", "--phase", "standby")
    assert layout.phases()["user"] == "standby"
    wait_for(lambda: _refused(user), PROPAGATION,
             "the certificate of the dropped key to be refused")
    assert _ssh_ok(current, "old-key-again")  # the key rolled back to works
    password_login(user)
    assert _ssh_ok(user, "fresh")
    rolled = [(e["from"], e["to"]) for e in layout.auth.audit("ca.rotation")
              if e["success"] and e["ca_type"] == "user"][-2:]
    assert rolled == [("update_clients", "rollback"), ("rollback", "standby")]


def test_lmctl_status_shows_phases(layout: Layout) -> None:
    text = layout.auth.lmctl("status").stdout
    assert "CA user rotation: standby" in text
    assert "CA host rotation: standby" in text
    assert json.loads(layout.auth.lmctl("status", "-o", "json").stdout)["ca_rotation"]
    refused = layout.auth.lmctl("auth", "rotate", "--type", "user", "--phase",
                                "update_servers", check=False)
    assert refused.returncode != 0, describe(refused)
    assert "may go to init" in refused.stderr


def test_all_in_one_process_follows_a_rotation(tmp_path: Path) -> None:
    """The proxy and node agent inside auth's own process (``limen start`` with every role)
    follow the same rotation: new logins and sessions work in every phase, the old
    certificate is refused after standby, and the process never restarts."""
    cluster = LimenCluster(tmp_path / "one", "one", ["-c", str(_config(
        tmp_path / "one.yaml", {"cluster": {"second_factor": "off"}}))])
    cluster.start()
    try:
        cluster.lmctl("apply", "-f", EXAMPLE_ROLES)
        user = LimenUser("olga", tmp_path / "olga", cluster.web)
        link = cluster.add_user("olga", ["ops"], [LOGIN])["url"]
        user.lmsh("signup", "--link", link, "--password-stdin", input=user.password + "\n")
        password_login(user)
        wait_for(lambda: _ssh_ok(user, "ready"), 20.0, "the node to serve ssh")
        before = _snapshot(user, tmp_path / "olga-before")
        one = Layout(cluster, cluster, cluster, user)
        for phase in ("init", "update_clients", "update_servers", "standby"):
            for ca_type in ("user", "host"):
                one.rotate("--type", ca_type, *(
                    ["--manual"] if phase == "init" else ["--phase", phase]))
            if phase in ("update_clients", "standby"):  # a certificate of the new key
                password_login(user)
                _new_session(one, user, f"one-{phase}", f"a new ssh session in phase {phase}")
            if phase == "update_servers":  # the proxy and the node, signed again, in-process
                wait_for(lambda: len([e for e in cluster.audit("cert.create")
                                      if e.get("renewal")]) >= 2, PROPAGATION,
                         "the proxy and the node to renew their host certificates")
        wait_for(lambda: _refused(before), PROPAGATION,
                 "a certificate from before the rotation to be refused")
        assert cluster.running
    finally:
        cluster.kill()
