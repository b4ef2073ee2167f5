"""The headline flow through `limen start` (auth, proxy and a node agent in one process, the node
reached only through its reverse tunnel): `lmsh login`, then `lmsh ssh`, stock OpenSSH with the
`lmsh config` output, `ssh -J` through the proxy, `lmsh scp`, an interactive PTY session that is
recorded and replayed with `lmsh play`, and refusals with their audit events."""

from __future__ import annotations

import getpass
import json
import os
import pty
import select
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .cluster import (
    ClusterFactory,
    LimenCluster,
    LimenUser,
    command,
    describe,
    run,
    wait_for,
)

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
REVIEWER_ROLE = """\
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: reviewer}
spec:
  allow:
    rules:
      - resources: [session, event]
        verbs: [list, read]
"""


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    cluster = module_clusters("edge", "--labels", "env=dev,team=platform")
    root = Path(__file__).resolve().parents[2]
    cluster.lmctl("apply", "-f", root / "examples" / "gitops" / "roles")
    cluster.lmctl("apply", "-f", "-", input=REVIEWER_ROLE)
    return cluster


@pytest.fixture(scope="module")
def ops(site: LimenCluster) -> LimenUser:
    user = site.signed_up_user("olga", roles=["ops", "reviewer"], logins=[LOGIN])
    user.login()
    return user


@pytest.fixture(scope="module")
def ssh_config(ops: LimenUser) -> Path:
    path = ops.home / "ssh_config"
    path.write_text(ops.lmsh("config").stdout, encoding="utf-8")
    return path


def _nodes(user: LimenUser) -> list[dict[str, object]]:
    return list(json.loads(user.lmsh("ls", "-o", "json").stdout)["items"])


def test_ls_shows_the_node_behind_its_tunnel(site: LimenCluster, ops: LimenUser) -> None:
    nodes = wait_for(lambda: [n for n in _nodes(ops) if n["hostname"] == HOST], 20.0,
                     "the node agent's heartbeat to reach lmsh ls")
    assert nodes[0]["labels"] == {"env": "dev", "team": "platform"}
    assert nodes[0]["logins"] == [LOGIN]


def test_lmsh_ssh_runs_commands_with_their_exit_codes(ops: LimenUser) -> None:
    result = ops.lmsh("ssh", f"{LOGIN}@{HOST}", "id -un; exit 7", check=False)
    assert result.returncode == 7, describe(result)
    assert result.stdout.strip() == LOGIN


def test_stock_ssh_with_lmsh_config(ops: LimenUser, ssh_config: Path, site: LimenCluster) -> None:
    result = run(["ssh", "-F", ssh_config, f"{LOGIN}@{HOST}.{site.name}", "echo via-config"],
                 env=ops.env)
    assert result.stdout.strip() == "via-config"


def test_stock_ssh_proxyjump(ops: LimenUser, ssh_config: Path, site: LimenCluster) -> None:
    result = run(["ssh", "-F", ssh_config, "-J", f"{site.name}-proxy",
                  f"{LOGIN}@{HOST}.{site.name}", "echo via-jump"], env=ops.env)
    assert result.stdout.strip() == "via-jump"


def test_auth_export_matches_what_clients_trust(site: LimenCluster, ops: LimenUser) -> None:
    user_ca = site.lmctl("auth", "export", "--type", "user").stdout.split()
    assert user_ca[0] == "ssh-ed25519"
    cert = run(["ssh-keygen", "-L", "-f", ops.ssh_cert_path(site.name)], env=ops.env).stdout
    fingerprint = run(["ssh-keygen", "-lf", "-"], env=ops.env,
                      input=" ".join(user_ca[:2]) + "\n").stdout.split()[1]
    assert f"Signing CA: ED25519 {fingerprint}" in cert
    host_line = site.lmctl("auth", "export", "--type", "host").stdout.strip()
    assert host_line.startswith("@cert-authority * ssh-ed25519 ")
    known_hosts = (ops.home / "known_hosts").read_text(encoding="utf-8").splitlines()
    assert host_line in known_hosts
    assert site.lmctl("auth", "export", "--type", "tls").stdout.startswith(
        "-----BEGIN CERTIFICATE-----")


def test_scp_both_ways(ops: LimenUser, tmp_path: Path) -> None:
    source = tmp_path / "up.bin"
    source.write_bytes(os.urandom(200_000))
    remote = f"/tmp/limen-e2e-{os.getpid()}.bin"
    ops.lmsh("scp", str(source), f"{LOGIN}@{HOST}:{remote}")
    back = tmp_path / "down.bin"
    ops.lmsh("scp", f"{LOGIN}@{HOST}:{remote}", str(back))
    assert back.read_bytes() == source.read_bytes()
    Path(remote).unlink(missing_ok=True)


def _interactive(user: LimenUser, keystrokes: list[bytes], timeout: float = 20.0) -> bytes:
    """Run `lmsh ssh -t` on a pseudo-terminal, typing each line once the prompt settled."""
    pid, fd = pty.fork()
    if pid == 0:  # child: become lmsh ssh (the env carries LIMEN_HOME)
        os.execvpe(command("lmsh"), ["lmsh", "ssh", "-t", f"{LOGIN}@{HOST}"], user.env)  # noqa: S606
    output = b""
    deadline = time.monotonic() + timeout
    pending = list(keystrokes)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                output += chunk
            elif pending:  # quiet for half a second: the shell waits for input
                os.write(fd, pending.pop(0))
        else:
            pytest.fail(f"interactive session did not end: {output[-500:]!r}")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, output[-500:]
    return output


def test_interactive_session_is_recorded_and_replayed(site: LimenCluster,
                                                       ops: LimenUser) -> None:
    output = _interactive(ops, [b"echo marker-$((6*7))\n", b"exit\n"])
    assert b"marker-42" in output
    ended = wait_for(lambda: [e for e in site.audit("session.end", user="olga")
                              if e.get("recorded")], 15.0, "session.end of the PTY session")
    session_id = str(ended[-1]["session_id"])
    wait_for(lambda: ops.lmsh("play", session_id, "--format", "text", check=False
                              ).returncode == 0, 15.0, "the recording to be uploaded")
    replay = ops.lmsh("play", session_id, "--format", "text").stdout
    assert "marker-42" in replay
    starts = [e for e in site.audit("session.start", user="olga")
              if e.get("session_id") == session_id]
    assert starts
    assert starts[0]["login"] == LOGIN


def test_login_not_allowed_is_refused_and_audited(site: LimenCluster, ops: LimenUser) -> None:
    """The proxy refuses before dialling (the node would refuse too: not a principal)."""
    login = f"nobody-{os.getpid()}"
    result = ops.lmsh("ssh", f"{login}@{HOST}", "true", check=False)
    assert result.returncode != 0, describe(result)
    reason = f"login {login!r} is not allowed on {HOST!r} (allowed: {LOGIN})"
    assert result.stderr.splitlines()[0] == f"lmsh: {reason}", describe(result)
    failures = wait_for(lambda: [e for e in site.audit("auth", "access.denied")
                                 if e.get("login") == login], 10.0,
                        "an audit event for the refused login")
    assert failures[-1]["success"] is False
    assert failures[-1]["reason"] == reason


def test_user_without_node_access_sees_nothing(site: LimenCluster) -> None:
    carol = site.signed_up_user("carola", roles=["auditor"], logins=[LOGIN])
    carol.login()
    assert [n for n in _nodes(carol) if n["hostname"] == HOST] == []
    result = carol.lmsh("ssh", f"{LOGIN}@{HOST}", "true", check=False)
    assert result.returncode != 0, describe(result)


def test_certificate_of_another_cluster_is_refused(site: LimenCluster,
                                                   tmp_path: Path) -> None:
    """Same user name, same logins, but signed by another cluster's CA: the proxy refuses."""
    other = LimenCluster(tmp_path, "other").start()
    try:
        other.lmctl("apply", "-f", Path(__file__).resolve().parents[2] / "examples" / "gitops"
                    / "roles")
        stranger = other.signed_up_user("olga", roles=["ops"], logins=[LOGIN])
        stranger.login()
        key = stranger.key_dir / "olga"
        cert = stranger.ssh_cert_path("other")
        ssh_proxy = site.listeners["ssh_proxy"]
        host, port = ssh_proxy.rsplit(":", 1)
        result = subprocess.run(
            ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
             "-o", "UserKnownHostsFile=/dev/null", "-o", f"IdentityFile={key}",
             "-o", f"CertificateFile={cert}", "-o", "IdentitiesOnly=yes", "-p", port,
             f"{LOGIN}@{host}", "true"],
            capture_output=True, text=True, timeout=30, check=False, env=stranger.env)
        assert result.returncode == 255, result.stderr
        assert "Permission denied" in result.stderr
    finally:
        other.stop()


def _lock_role(name: str, lock: str, logins: list[str]) -> str:
    return (f"apiVersion: limen.dev/v1alpha1\nkind: Role\nmetadata: {{name: {name}}}\n"
            f"spec:\n  options: {{lock: {lock}}}\n  allow:\n    logins: {logins}\n"
            "    node_labels: {env: dev}\n")


@pytest.mark.parametrize("lock", ["strict", "best_effort"])
def test_removing_access_ends_open_sessions_only_under_strict_lock(
        site: LimenCluster, lock: str) -> None:
    role = f"locked-{lock.replace('_', '-')}"
    site.lmctl("apply", "-f", "-", input=_lock_role(role, lock, [LOGIN]))
    user = site.signed_up_user(f"lena-{lock.replace('_', '-')}", roles=[role], logins=[LOGIN])
    user.login()
    session = subprocess.Popen(
        [command("lmsh"), "ssh", f"{LOGIN}@{HOST}", "echo started; sleep 30"],
        env=user.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert session.stdout is not None
        assert session.stdout.readline() == b"started\n"
        site.lmctl("apply", "-f", "-", input=_lock_role(role, lock, ["someone-else"]))
        if lock == "strict":
            wait_for(lambda: session.poll() is not None, 15.0, "the session to be ended")
            assert session.returncode != 0
            denied = wait_for(lambda: [e for e in site.audit("access.denied", user=user.name)
                                       if e.get("lock") == "strict"], 10.0,
                              "the access.denied event of the ended session")
            assert "removed" in denied[-1]["reason"]
        else:
            with pytest.raises(subprocess.TimeoutExpired):
                session.wait(timeout=6.0)  # well past several re-check intervals: still open
    finally:
        session.kill()
        session.communicate()  # reaps it and closes its pipes
