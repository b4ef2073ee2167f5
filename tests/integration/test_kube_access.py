"""Kubernetes through Limen with the real kubectl (issue #15), against a single-node
``limen start --roles auth,proxy,node,kube`` and the project's Kubernetes API emulator
(``kube_env``): ``lmsh kube ls``, ``lmsh kube login`` (the kubeconfig entry with the exec
plugin, ``kube_credentials_main.py``: what ``lmsh kube credentials`` prints, a fresh
certificate when the saved one is gone), ``kubectl get``, ``get -w`` receiving a change,
``apply``, switching contexts between two kube clusters, ``lmsh kube logout``; each request
audited as ``kube.request``.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from .cluster import describe, wait_for
from .kube_env import KubeEnv, start_kube_env


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    yield from start_kube_env(tmp_path_factory.mktemp("kube"))


def test_ls_shows_the_clusters_the_roles_admit(kube_env: KubeEnv) -> None:
    listed = json.loads(kube_env.alice.lmsh("kube", "ls", "-o", "json").stdout)["items"]
    assert [(c["name"], c["kubernetes_groups"]) for c in listed] == [("emu", ["developers"])]
    text = kube_env.olga.lmsh("kube", "ls").stdout
    assert "emu-ops" in text
    assert "operators" in text


def test_kubectl_get_and_apply_through_limen(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    config = yaml.safe_load(alice.kubeconfig.read_text())
    assert config["current-context"] == "kubetest-emu"
    [plugin] = [u["user"]["exec"] for u in config["users"] if u["name"] == "kubetest-emu"]
    assert plugin["args"][:2] == ["-I", "-S"]
    assert plugin["args"][2].endswith("/limen/client/kube_credentials_main.py")
    served = subprocess.run([plugin["command"], *plugin["args"]], env=alice.env,
                            capture_output=True, text=True, timeout=30, check=True)
    assert served.stdout == alice.lmsh("kube", "credentials", "--cluster", "emu").stdout
    [saved] = alice.user.home.glob("keys/*/alice-kube/*/emu.crt")
    saved.unlink()  # not served from the files: the plugin fetches a fresh one
    fresh = subprocess.run([plugin["command"], *plugin["args"]], env=alice.env,
                           capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(fresh.stdout)["status"]["clientCertificateData"] == saved.read_text()
    assert fresh.stdout != served.stdout
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "seen", "namespace": "default"},
                         "data": {"k": "v"}})
    out = alice.kubectl("get", "configmaps", "-o", "name").stdout
    assert "configmap/seen" in out
    manifest = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "applied", "namespace": "default"},
                               "data": {"by": "alice"}})
    alice.kubectl("apply", "--validate=false", "-f", "-", input=manifest)
    assert (kube_env.api.get("configmaps", "applied", "default") or {})["data"] == \
        {"by": "alice"}
    events = kube_env.wait_audit("alice's list audited", user="alice", verb="list",
                                 resource="configmaps")
    assert events[-1]["response_code"] == 200
    assert events[-1]["kubernetes_user"] == "alice"
    assert events[-1]["kubernetes_groups"] == ["developers"]
    assert events[-1]["kube_cluster"] == "emu"


def test_watch_receives_a_change(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "listed", "namespace": "default"}})
    watch = subprocess.Popen(
        ["kubectl", "get", "configmaps", "-w", "-o", "name"], env=alice.env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    try:
        assert watch.stdout is not None
        fd, pending, created = watch.stdout.fileno(), b"", False
        deadline = time.monotonic() + 20.0
        while "configmap/watched" not in lines and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
            data = os.read(fd, 4096) if ready else b""
            if not data:
                break
            *complete, pending = (pending + data).split(b"\n")
            lines += [line.decode().strip() for line in complete]
            if "configmap/listed" in lines and not created:  # the watch starts from there
                created = True
                kube_env.api.create({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "watched", "namespace": "default"}})
        found = "configmap/watched" in lines
    finally:
        watch.terminate()
        _out, err = watch.communicate(timeout=10)
    assert found, (lines, err)


def test_contexts_switch_between_clusters_and_logout(kube_env: KubeEnv,
                                                     tmp_path: Path) -> None:
    olga = kube_env.olga
    olga.lmsh("kube", "login", "emu-ops")
    assert olga.kubectl("get", "secrets", "-n", "kube-system").returncode == 0
    olga.kubectl("config", "use-context", "kubetest-emu-ops")
    result = olga.lmsh("kube", "login", "emu", check=False)
    assert result.returncode == 1, describe(result)
    assert "may not use kube cluster emu" in result.stderr or "emu" in result.stderr
    olga.lmsh("kube", "logout")
    config = yaml.safe_load(olga.kubeconfig.read_text())
    assert not [c for c in config["contexts"] if c["name"].startswith("kubetest-")]
    olga.lmsh("kube", "login", "emu-ops")
    olga.lmsh("logout")  # lmsh logout forgets the kube clusters too
    config = yaml.safe_load(olga.kubeconfig.read_text())
    assert not [c for c in config["contexts"] if c["name"].startswith("kubetest-")]
    olga.user.login()


def test_auth_whoami_is_the_limen_user_impersonated_by_the_agent(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    out = alice.kubectl("auth", "whoami", "-o", "json").stdout
    status = json.loads(out)["status"]["userInfo"]
    assert status["username"] == "alice"
    assert "developers" in status["groups"]
    seen = [e for e in kube_env.api.audit_events()
            if (e.get("impersonatedUser") or {}).get("username") == "alice"]
    assert seen
    assert {e["user"]["username"] for e in seen} == {"system:serviceaccount:limen:kube-agent"}


def _pty_exec(env: dict[str, str], argv: list[str], typed: bytes, expect: bytes,
              timeout: float = 20.0) -> bytes:
    """Run ``argv`` on a new pseudo-terminal, type ``typed``, read until ``expect`` shows."""
    master, slave = os.openpty()
    process = subprocess.Popen(argv, env=env, stdin=slave, stdout=slave, stderr=slave,
                               start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + timeout
        sent = False
        while expect not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
            if not sent and (b"$" in seen or b"#" in seen):
                os.write(master, typed)
                sent = True
        process.wait(timeout=timeout)
        return seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)


def test_exec_logs_and_port_forward(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    kube_env.api.run_pod("ticker", ["sh", "-c", "echo up; while true; do echo tick; sleep 0.2;"
                                                " done"])
    out = alice.kubectl("exec", "ticker", "--", "sh", "-c", "echo from $((6*7))").stdout
    assert out.strip() == "from 42"
    [event] = kube_env.wait_audit("the exec audited", user="alice", verb="exec")
    assert event["command"] == ["sh", "-c", "echo from $((6*7))"]
    assert (event["tty"], event["response_code"]) == (False, 101)
    # logs -f streams: lines arrive while the pod writes them
    follow = subprocess.Popen(["kubectl", "logs", "-f", "ticker"], env=alice.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert follow.stdout is not None
        fd, seen = follow.stdout.fileno(), b""
        deadline = time.monotonic() + 20.0
        while seen.count(b"tick") < 10 and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
            data = os.read(fd, 4096) if ready else b""
            if not data:
                break
            seen += data
        assert seen.count(b"tick") >= 10, seen
    finally:
        follow.terminate()
        follow.communicate(timeout=10)


def test_port_forward_carries_a_tcp_stream(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo() -> None:
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    kube_env.api.run_pod("echo", ports={8080: port})
    forward = subprocess.Popen(["kubectl", "port-forward", "pod/echo", ":8080"],
                               env=alice.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert forward.stdout is not None
        ready, _, _ = select.select([forward.stdout], [], [], 20.0)
        assert ready, "kubectl port-forward printed nothing"
        line = forward.stdout.readline()
        local = int(line.split("127.0.0.1:")[1].split()[0])
        payload = os.urandom(300_000)
        with socket.create_connection(("127.0.0.1", local), timeout=20) as conn:
            conn.sendall(payload)
            received = b""
            while len(received) < len(payload):
                data = conn.recv(65536)
                if not data:
                    break
                received += data
        assert received == payload
    finally:
        forward.terminate()
        forward.communicate(timeout=10)
        server.close()
        thread.join(10)
    kube_env.wait_audit("the port-forward audited", user="alice", verb="portforward")
    # a session of its own in the audit log, with what it carried each way
    [start] = [e for e in kube_env.cluster.audit("kube.session.start", user="alice")
               if e.get("verb") == "portforward"]
    [end] = [e for e in kube_env.cluster.audit("kube.session.end", user="alice")
             if e.get("verb") == "portforward"]
    assert start["session_id"] == end["session_id"]
    assert (start["name"], end["namespace"]) == ("echo", "default")
    assert end["bytes_in"] >= len(payload)
    assert end["bytes_out"] >= len(payload)


def test_exec_with_a_terminal(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    kube_env.api.run_pod("shell", ["sh"], tty=True, stdin=True)
    seen = _pty_exec(alice.env, ["kubectl", "exec", "-it", "shell", "--", "sh"],
                     b"echo $((6*7))ok; exit\r", b"42ok")
    assert b"42ok" in seen, seen
    events = kube_env.wait_audit("the terminal exec audited", user="alice", verb="exec",
                                 tty=True)
    assert events[-1]["command"] == ["sh"]
    recording = events[-1]["recording"]

    def listed() -> bool:
        out = alice.lmsh("recordings", "ls", "-o", "json").stdout
        return recording in {r["session_id"] for r in json.loads(out)["items"]}

    wait_for(listed, 15.0, "the exec recording to be stored")
    played = alice.lmsh("play", recording, "-o", "text").stdout
    assert "42ok" in played
