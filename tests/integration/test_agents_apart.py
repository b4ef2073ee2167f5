"""Auth, proxy and a node agent as three ``limen start`` processes, the production layout: the
proxy joins auth with the static proxy token (``auth.proxy_token_file``), the node joins
through the proxy with a one-time token and CA pin and is reached only through its reverse
tunnel. Users log in at the proxy and ``ssh`` as usual; the node's RBAC, audit events and
recordings go through its tunnel to auth. Resilience: the proxy is killed and restarted on the
same ports while the node runs; the node is killed in the middle of a recorded session."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ports import free_port

from .cluster import LimenCluster, LimenUser, describe, run, wait_for

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
EXAMPLE_ROLES = Path(__file__).resolve().parents[2] / "examples" / "gitops" / "roles"
REVIEWER_ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: reviewer}
spec:
  allow:
    rules: [{resources: [session], verbs: [read]}]
"""


@dataclass
class Layout:
    auth: LimenCluster
    proxy: LimenCluster
    node: LimenCluster
    user: LimenUser
    ssh_config: Path

    def ssh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ssh", "-F", self.ssh_config, *args], env=self.user.env, check=check)


def _config(path: Path, tree: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Layout]:
    root = tmp_path_factory.mktemp("apart")
    proxy_token = secrets.token_hex(24)
    token_file = root / "proxy-token"
    token_file.write_text(proxy_token + "\n", encoding="utf-8")
    token_file.chmod(0o600)
    auth = LimenCluster(root / "auth", "hub", ["--roles", "auth", "-c", str(_config(
        root / "auth.yaml", {"auth": {"proxy_token_file": str(token_file)}}))])
    started: list[LimenCluster] = []
    try:
        started.append(auth.start())
        auth.lmctl("apply", "-f", EXAMPLE_ROLES)
        auth.lmctl("apply", "-f", "-", input=REVIEWER_ROLE)
        node_token = auth.lmctl_json("tokens", "add", "--type", "node", "--ttl", "5m")
        pin = node_token["ca_pin"]
        listeners = {name: f"127.0.0.1:{free_port()}" for name in ("web", "ssh_proxy",
                                                                   "tunnel")}
        proxy = LimenCluster(root / "proxy", "hub", [
            "--roles", "proxy", "-c", str(_config(root / "proxy.yaml", {"listeners": listeners})),
            "--auth-server", auth.auth, "--token", proxy_token, "--ca-pin", pin,
        ], random_ports=False)
        started.append(proxy.start())
        node = LimenCluster(root / "node", "hub", [
            "--roles", "node", "-c", str(_config(root / "node.yaml", {"node": {
                "labels": {"env": "dev"},
                "commands": [{"name": "kernel", "command": ["uname", "-r"], "period": "1h"}],
            }})), "--proxy", proxy.web, "--token", node_token["token"], "--ca-pin", pin,
        ])
        started.append(node.start())
        user = LimenUser("nina", root / "users" / "nina", proxy.web)
        user.signup(auth.add_user("nina", ["ops", "reviewer"], [LOGIN])["url"])
        user.login()
        ssh_config = user.home / "ssh_config"
        ssh_config.write_text(user.lmsh("config").stdout, encoding="utf-8")
        yield Layout(auth, proxy, node, user, ssh_config)
    finally:
        for process in reversed(started):
            process.kill()


def _listed(layout: Layout) -> list[dict[str, object]]:
    items = json.loads(layout.user.lmsh("ls", "-o", "json").stdout)["items"]
    return [n for n in items if n["hostname"] == HOST]


def test_node_apart_joins_once_and_keeps_its_credentials(layout: Layout) -> None:
    host = layout.node.data_dir / "host"
    assert {p.name: p.stat().st_mode & 0o777 for p in host.iterdir()} == {
        name: 0o600 for name in ("key.pem", "tls.crt", "cas.pem", "ssh-cert.pub", "meta.json")}
    assert host.stat().st_mode & 0o777 == 0o700
    joins = [(e["role"], e["success"]) for e in layout.auth.audit("join")]
    assert joins == [("proxy", True), ("node", True)]


def test_node_apart_is_listed_with_its_dynamic_labels(layout: Layout) -> None:
    nodes = wait_for(lambda: _listed(layout), 20.0, "the node's heartbeat to reach lmsh ls")
    assert nodes[0]["labels"] == {"env": "dev", "kernel": os.uname().release}


def test_ssh_through_the_separate_proxy_is_audited_at_auth(layout: Layout) -> None:
    result = layout.user.lmsh("ssh", f"{LOGIN}@{HOST}", "id -un; exit 3", check=False)
    assert result.returncode == 3, describe(result)
    assert result.stdout.strip() == LOGIN
    node_id = (layout.node.data_dir / "host_uuid").read_text(encoding="utf-8").strip()
    execs = wait_for(lambda: [e for e in layout.auth.audit("exec", user="nina")
                              if e.get("command") == "id -un; exit 3"], 15.0,
                     "the node's exec event to be forwarded to auth")
    assert execs[-1]["exit_code"] == 3
    assert execs[-1]["server_id"] == node_id
    assert execs[-1]["cluster"] == "hub"


def test_refused_login_is_audited_at_auth(layout: Layout) -> None:
    result = layout.user.lmsh("ssh", f"nobody-{os.getpid()}@{HOST}", "true", check=False)
    assert result.returncode != 0, describe(result)
    wait_for(lambda: [e for e in layout.auth.audit("auth", "access.denied")
                      if e.get("login") == f"nobody-{os.getpid()}"], 15.0,
             "the refusal to be audited at auth")


def test_agent_reconnects_after_the_proxy_is_killed_and_restarted(layout: Layout) -> None:
    layout.proxy.kill()
    assert layout.node.running
    killed = time.monotonic()
    layout.proxy.start()
    attempts: list[subprocess.CompletedProcess[str]] = []

    def session_works() -> bool:
        attempts.append(layout.ssh(f"{LOGIN}@{HOST}.hub", "echo back", check=False))
        return attempts[-1].stdout.strip() == "back"

    try:
        wait_for(session_works, 30.0, "a new session through the restarted proxy")
    except AssertionError:
        raise AssertionError(describe(attempts[-1])) from None
    assert time.monotonic() - killed < 30.0


def recorded_output(path: Path) -> str:
    """The output events of an asciicast file being written, joined (a last line still
    being written is left out)."""
    text = ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines()[1:]:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, list) and len(event) == 3 and event[1] == "o":
            text += str(event[2])
    return text


def test_recording_survives_the_agent_being_killed_mid_session(layout: Layout) -> None:
    marker = f"before-kill-{os.getpid()}"
    session = subprocess.Popen(
        ["ssh", "-tt", "-F", layout.ssh_config, f"{LOGIN}@{HOST}.hub",
         f"printf 'before-kill-%s\\n' {os.getpid()}; sleep 20"],
        env=layout.user.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    try:
        assert session.stdout is not None
        os.set_blocking(session.stdout.fileno(), False)
        seen = bytearray()

        def marker_printed() -> bool:
            seen.extend(session.stdout.read() or b"") if session.stdout else None
            return marker.encode() in seen

        wait_for(marker_printed, 20.0, "the session's first output")
        recordings = layout.node.data_dir / "log" / "sessions"
        # The recorder flushes every half second; a crash loses at most that much. The
        # marker may span two output events (the PTY was read in two pieces).
        wait_for(lambda: any(marker in recorded_output(p)
                             for p in recordings.glob("*.cast.part")), 10.0,
                 "the marker in the recording on disk")
        os.killpg(layout.node.process.pid, signal.SIGKILL)  # type: ignore[union-attr]
        layout.node.process.wait(10)  # type: ignore[union-attr]
    finally:
        session.kill()
        session.wait(10)
        if session.stdout is not None:
            session.stdout.close()
    layout.node.start()  # saved credentials: no token needed any more
    stored = layout.auth.data_dir / "log" / "recordings"

    def uploaded() -> list[dict[str, object]]:
        metas = [json.loads(p.read_text(encoding="utf-8")) for p in stored.glob("*.json")]
        return [m for m in metas if m.get("incomplete")]

    meta = wait_for(uploaded, 30.0, "the interrupted recording to reach auth")[-1]
    session_id = str(meta["session_id"])
    assert meta["user"] == "nina"
    replay = layout.user.lmsh("play", session_id, "--format", "text").stdout
    assert marker in replay
    assert not list((layout.node.data_dir / "log" / "sessions").glob(f"{session_id}*"))
