"""What a user reads when an SSH target cannot be reached, with real processes: one
``limen start`` (auth, proxy and its own node, named ``solo`` with ``--nodename``), two node
agents joined apart that both call themselves ``twin``, an agentless Resource whose address
refuses, and users logged in with ``lmsh``. Every refusal is asserted as the first line of
stderr of ``lmsh ssh`` and of the stock ``ssh -F <lmsh config>`` (ProxyCommand ``lmsh proxy
ssh``), and in the audit log. Also: ``lmsh proxy ssh`` with stdin ``/dev/null``, a file or a
closed descriptor; ``lmsh ls`` with twins; reaching a twin by its id; a node without
``sftp-server`` telling scp so, and finding it once installed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from ports import free_port

from .cluster import ClusterFactory, LimenCluster, LimenUser, command, describe, run, wait_for

ROOT = Path(__file__).resolve().parents[2]
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
NAME = "errs"
TESTER_ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: tester}
spec:
  allow:
    logins: ['{{internal.logins}}']
    node_labels: {'*': '*'}
"""


LEGACY = f"""\
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {{name: legacy, labels: {{env: dev}}}}
spec: {{kind: ssh, address: '127.0.0.1:{free_port()}'}}
"""


@dataclass
class Site:
    cluster: LimenCluster
    twins: dict[str, LimenCluster]
    """host id → the node agent process."""
    ops: LimenUser
    """Role ops: root allowed everywhere."""
    tess: LimenUser
    """Role tester: only the login ``tess``."""
    configs: dict[str, Path]
    sftp_link: Path
    """Where the first twin looks for sftp-server (missing at start)."""

    def config(self, user: LimenUser) -> Path:
        return self.configs[user.name]


def _node_agent(site: LimenCluster, root: Path, name: str, nodename: str,
                settings: dict[str, object]) -> LimenCluster:
    token = site.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
    config = root / f"{name}.yaml"
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return LimenCluster(root / name, NAME, [
        "--roles", "node", "-c", str(config), "--nodename", nodename, "--labels", "env=dev",
        "--proxy", site.web, "--token", token["token"], "--ca-pin", token["ca_pin"]])


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    cluster = module_clusters(NAME, "--nodename", "solo", "--labels", "env=dev")
    cluster.lmctl("apply", "-f", ROOT / "examples" / "gitops" / "roles")
    cluster.lmctl("apply", "-f", "-", input=TESTER_ROLE)
    cluster.lmctl("apply", "-f", "-", input=LEGACY)
    root = tmp_path_factory.mktemp("twins")
    sftp_link = root / "bin" / "sftp-server"
    agents = [_node_agent(cluster, root, "twin-a", "twin", {"node": {
                  "sftp_server": str(sftp_link)}}),
              _node_agent(cluster, root, "twin-b", "twin", {})]
    try:
        for agent in agents:
            agent.start()
        twins = {(a.data_dir / "host_uuid").read_text(encoding="utf-8").strip(): a
                 for a in agents}
        ops = cluster.signed_up_user("olga", roles=["ops"], logins=["root"])
        tess = cluster.signed_up_user("tess", roles=["tester"], logins=["tess"])
        configs = {}
        for user in (ops, tess):
            user.login()
            configs[user.name] = user.home / "ssh_config"
            configs[user.name].write_text(user.lmsh("config").stdout, encoding="utf-8")
        wait_for(lambda: len([n for n in _listed(ops) if n["hostname"] in ("solo", "twin")])
                 == 3, 30.0, "solo and both twins in lmsh ls")
        yield Site(cluster, twins, ops, tess, configs, sftp_link)
    finally:
        for agent in agents:
            agent.kill()


def _listed(user: LimenUser) -> list[dict[str, object]]:
    import json

    return list(json.loads(user.lmsh("ls", "-o", "json").stdout)["items"])


def _first_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, describe(result)
    lines = result.stderr.splitlines()
    assert lines, describe(result)
    return lines[0]


def _both(site: Site, user: LimenUser, login: str, host: str) -> list[
        subprocess.CompletedProcess[str]]:
    """``lmsh ssh LOGIN@HOST true`` and ``ssh -F <lmsh config> LOGIN@HOST.<cluster> true``."""
    return [
        user.lmsh("ssh", f"{login}@{host}", "true", check=False),
        run(["ssh", "-F", site.config(user), f"{login}@{host}.{NAME}", "true"], env=user.env,
            check=False),
    ]


def _assert_refused(results: list[subprocess.CompletedProcess[str]], line: str) -> None:
    for result in results:
        assert result.returncode != 0, describe(result)
        assert _first_line(result) == line, describe(result)


def _events(site: Site, event_type: str, user: str) -> list[dict[str, Any]]:
    """``lmctl audit search`` (a list, or a ``List`` document with ``items``)."""
    found: Any = site.cluster.audit(event_type, user=user)
    return list(found["items"] if isinstance(found, dict) else found)


def _audited(site: Site, event_type: str, user: str, target: str) -> list[dict[str, Any]]:
    return [e for e in _events(site, event_type, user) if e.get("target") == target]


def test_unknown_node(site: Site) -> None:
    _assert_refused(_both(site, site.ops, "root", "nosuch"), "lmsh: unknown node 'nosuch'")
    events = _audited(site, "route.failed", "olga", "nosuch")
    assert len(events) == 2, events
    assert {e["code"] for e in events} == {"L3006W"}
    assert {e["reason"] for e in events} == {"unknown node 'nosuch'"}
    assert {e["login"] for e in events} == {"root"}


def test_nodename_is_listed_and_twins_are_told_apart(site: Site) -> None:
    text = site.ops.lmsh("ls").stdout.splitlines()
    assert text[0].split()[:3] == ["Node", "Name", "ID"], text
    rows = {line.split()[1]: line.split()[0] for line in text[1:]}
    assert {rows[host_id] for host_id in site.twins} == {"twin"}, text
    assert "solo" in rows.values(), text


def test_ambiguous_name_lists_the_ids(site: Site) -> None:
    ids = ", ".join(sorted(site.twins))
    _assert_refused(_both(site, site.ops, "root", "twin"),
                    f"lmsh: 'twin' matches 2 nodes: use one of {ids}")
    events = _audited(site, "route.failed", "olga", "twin")
    assert len(events) == 2, events
    assert all("matches 2 nodes" in str(e["reason"]) for e in events)


def test_a_twin_is_reached_by_its_id(site: Site) -> None:
    host_id = sorted(site.twins)[0]
    result = site.ops.lmsh("ssh", f"root@{host_id}", "echo by-id", check=False)
    assert (result.returncode, result.stdout) == (0, "by-id\n"), describe(result)
    result = run(["ssh", "-F", site.config(site.ops), f"root@{host_id}.{NAME}", "echo by-id"],
                 env=site.ops.env, check=False)
    assert (result.returncode, result.stdout) == (0, "by-id\n"), describe(result)


def test_login_not_allowed_is_refused_at_the_proxy(site: Site) -> None:
    _assert_refused(_both(site, site.tess, "root", "solo"),
                    "lmsh: login 'root' is not allowed on 'solo' (allowed: tess)")
    events = _audited(site, "access.denied", "tess", "solo")
    assert len(events) == 2, events
    assert {(e["code"], e["login"], e["server"]) for e in events} == {
        ("L4000W", "root", "solo")}


def test_agentless_address_that_refuses_is_offline(site: Site) -> None:
    _assert_refused(_both(site, site.ops, "root", "legacy"), "lmsh: node 'legacy' is offline")
    events = _audited(site, "route.failed", "olga", "legacy")
    assert len(events) == 2, events
    assert all(e["agentless"] is True and e.get("error") for e in events), events


@pytest.mark.parametrize("stdin", ["devnull", "file", "closed"])
def test_proxy_ssh_reads_any_stdin(site: Site, stdin: str, tmp_path: Path) -> None:
    lmsh = command("lmsh")
    for target, code in (("root@solo:3022", 0), ("root@nosuch:3022", 1)):
        redirect = {"devnull": "</dev/null", "closed": "<&-",
                    "file": f"<{tmp_path / 'input'}"}[stdin]
        (tmp_path / "input").write_bytes(b"SSH-2.0-x\r\n")
        done = subprocess.run(["sh", "-c", f"exec {lmsh} proxy ssh {target} {redirect}"],
                              env=site.ops.env, capture_output=True, timeout=60, check=False)
        shown = f"{target} {redirect}: exit {done.returncode}\n{done.stderr!r}"
        assert done.returncode == code, shown
        if code == 0:  # the node's SSH banner, then the end of its input
            assert done.stdout.startswith(b"SSH-2.0-"), shown
            assert done.stderr == b"", shown
        else:
            assert done.stderr == b"lmsh: unknown node 'nosuch'\n", shown


def test_sftp_server_missing_then_installed(site: Site, tmp_path: Path) -> None:
    host_id = next(h for h, a in site.twins.items() if a.root.name == "twin-a")
    source = tmp_path / "up.txt"
    source.write_text("payload\n", encoding="utf-8")
    remote = f"/tmp/limen-sftp-{os.getpid()}.txt"
    for result in (
        site.ops.lmsh("scp", str(source), f"root@{host_id}:{remote}", check=False),
        run(["scp", "-F", site.config(site.ops), str(source), f"root@{host_id}.{NAME}:{remote}"],
            env=site.ops.env, check=False),
        run(["sftp", "-F", site.config(site.ops), "-b", "-", f"root@{host_id}.{NAME}"],
            env=site.ops.env, input="ls /\n", check=False),
    ):
        assert result.returncode != 0, describe(result)
        assert "Traceback" not in result.stderr, describe(result)
        assert "limen: install openssh-sftp-server on this node" in result.stderr.splitlines(), \
            describe(result)
    wait_for(lambda: [e for e in _events(site, "sftp", "olga")
                      if e.get("reason") == "install openssh-sftp-server on this node"
                      and e.get("success") is False], 20.0,
             "the refused sftp start in the audit log (the node's outbox)")
    # looked up at each request: installing it (here: a link) needs no restart
    site.sftp_link.parent.mkdir(exist_ok=True)
    site.sftp_link.symlink_to(SFTP_SERVER)
    site.ops.lmsh("scp", str(source), f"root@{host_id}:{remote}")
    assert Path(remote).read_text(encoding="utf-8") == "payload\n"
    Path(remote).unlink()


def test_node_without_tunnel_is_offline(site: Site) -> None:
    """Last: stops a twin. Its presence outlives the tunnel by up to 35 s; meanwhile it is
    known but offline."""
    host_id = sorted(site.twins)[1]
    site.twins[host_id].stop()
    _assert_refused(_both(site, site.ops, "root", host_id), "lmsh: node 'twin' is offline")
    events = _audited(site, "route.failed", "olga", host_id)
    assert len(events) == 2, events
    assert {e["server_id"] for e in events} == {host_id}
