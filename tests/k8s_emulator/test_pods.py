"""Pods that run local processes in the Kubernetes API emulator, driven by the real kubectl:
``exec`` (with and without a terminal), ``attach``, ``logs -f`` and ``port-forward``.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from integration.terminal import Prompt, Terminal
from k8s_emulator.fixtures import KubeAPI


def test_exec_runs_commands_and_reports_their_exit(kube_api: KubeAPI) -> None:
    api = kube_api
    pod = api.run_pod("web", env={"GREETING": "hello"})
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["nodeName"]
    listed = api.kubectl("get", "pods").stdout.splitlines()
    assert [row.split()[:4] for row in listed] == [
        ["NAME", "READY", "STATUS", "RESTARTS"],
        ["web", "1/1", "Running", "0"],
    ]
    hi = api.kubectl("exec", "web", "--", "echo", "hi")
    assert hi.stdout == "hi\n"
    env = api.kubectl("exec", "web", "-c", "main", "--", "sh", "-c", 'echo "$GREETING"')
    assert env.stdout == "hello\n"
    failed = api.kubectl(
        "exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False
    )
    assert (failed.returncode, failed.stdout) == (3, "out\n")
    assert failed.stderr == "err\ncommand terminated with exit code 3\n"
    piped = api.kubectl(
        "exec", "-i", "web", "--", "sh", "-c", "tr a-z A-Z; echo done", input="abc\ndef\n"
    )
    assert piped.stdout == "ABC\nDEF\ndone\n"
    missing = api.kubectl("exec", "web", "--", "no-such-command", check=False)
    assert missing.returncode == 1
    assert "no-such-command" in missing.stderr
    wrong = api.kubectl("exec", "web", "-c", "other", "--", "true", check=False)
    assert "container other is not valid for pod web" in wrong.stderr


def test_exec_with_a_terminal(kube_api: KubeAPI, tmp_path: Path) -> None:
    """``kubectl exec -it`` on a real terminal: the command gets a terminal of the client's
    size, reads what is typed at its prompt, and its exit status comes back."""
    kube_api.run_pod("web")
    script = 'printf "name? "; read n; echo "hello $n"; tty; stty size; exit 7'
    command = shlex.join(kube_api.kubectl_command("exec", "-it", "web", "--", "sh", "-c", script))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm", "PS1": "$ "}
    terminal = Terminal(["bash", "--norc", "--noprofile"], env=env, cwd=str(tmp_path))
    try:
        status, output = terminal.run(
            command, "KUBECTL-EXIT", [Prompt(re.compile(r"name\? $"), lambda _: "limen")], 30
        )
    finally:
        terminal.close()
    assert status == 7
    assert "hello limen\n" in output
    assert re.search(r"^/dev/pts/\d+$", output, re.MULTILINE)
    assert "\n40 120\n" in output  # the Terminal is 120x40: kubectl sent the size


def test_logs_follow_tail_and_timestamps(kube_api: KubeAPI, tmp_path: Path) -> None:
    api = kube_api
    fifo = tmp_path / "more"
    os.mkfifo(fifo)
    api.run_pod("web", ["sh", "-c", f"echo first; cat {shlex.quote(str(fifo))}"])
    follow = subprocess.Popen(
        api.kubectl_command("logs", "-f", "web"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follow.stdout is not None
        assert follow.stdout.readline() == "first\n"
        with fifo.open("w") as more:  # the pod prints a new line while kubectl follows
            more.write("second\n")
        assert follow.stdout.readline() == "second\n"
        out, err = follow.communicate(timeout=20)  # the process exited: the stream ends
        assert (follow.returncode, out, err) == (0, "", "")
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.communicate()
    last = api.kubectl("logs", "web", "--tail=1", "--timestamps").stdout
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z second\n", last)
    assert api.kubectl("logs", "web").stdout == "first\nsecond\n"
    done = api.wait_for(
        lambda: (api.get("pods", "web") or {}).get("status", {}).get("phase") == "Succeeded",
        message="the pod to succeed",
    )
    assert done


def test_attach_to_the_main_process(kube_api: KubeAPI) -> None:
    api = kube_api
    api.run_pod(
        "echoer",
        ["sh", "-c", 'echo ready; while read l; do echo "got $l"; done; echo bye; exit 4'],
        stdin=True,
    )
    api.wait_for(
        lambda: api.kubectl("logs", "echoer").stdout == "ready\n", message="the pod's first line"
    )
    attached = api.kubectl("attach", "-i", "echoer", input="a\nb\n", check=False)
    assert attached.stdout == "got a\ngot b\nbye\n"
    assert attached.returncode == 4  # its exit status, as for exec
    assert api.kubectl("logs", "echoer").stdout == "ready\ngot a\ngot b\nbye\n"
    pod = api.wait_for(
        lambda: (p := api.get("pods", "echoer")) and p["status"]["phase"] == "Failed" and p,
        message="the pod to fail",
    )
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 4


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_port() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _forward(api: KubeAPI, *args: str) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(
        api.kubectl_command("port-forward", *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> \d+", line)
    assert found, line + process.stderr.read() if process.stderr else line
    return process, int(found.group(1))


def test_port_forward_carries_a_tcp_stream(kube_api: KubeAPI, echo_port: int) -> None:
    api = kube_api
    api.run_pod("web", ports={8080: echo_port})
    process, port = _forward(api, "pod/web", ":8080")
    try:
        payload = os.urandom(300_000)
        for _ in range(2):  # each local connection is a stream pair of its own
            with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
                conn.sendall(b"hello")
                assert conn.recv(5, socket.MSG_WAITALL) == b"hello"
                conn.sendall(payload)
                received = bytearray()
                while len(received) < len(payload):
                    chunk = conn.recv(65536)
                    assert chunk, "the forwarded connection closed early"
                    received += chunk
                assert bytes(received) == payload
    finally:
        process.terminate()
        process.communicate(timeout=10)


def test_port_forward_to_a_closed_port_reports_the_error(kube_api: KubeAPI) -> None:
    api = kube_api
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    api.run_pod("web", ports={9000: closed})
    process, port = _forward(api, "pod/web", ":9000")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
            assert conn.recv(1) == b""
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert "error forwarding port 9000 to pod web, uid " in err
    assert f"dial tcp 127.0.0.1:{closed}: connect:" in err


def test_a_pod_without_processes_cannot_be_reached(kube_api: KubeAPI) -> None:
    api = kube_api
    api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "plain"},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        }
    )
    assert (api.get("pods", "plain") or {})["status"]["phase"] == "Pending"
    result = api.kubectl("exec", "plain", "--", "true", check=False)
    assert result.returncode == 1
    assert "pod plain does not have a host assigned" in result.stderr
    logs = api.kubectl("logs", "plain", check=False)
    assert "pod plain does not have a host assigned" in logs.stderr


def test_deleting_a_pod_kills_its_processes(kube_api: KubeAPI, tmp_path: Path) -> None:
    api = kube_api
    pid_file = tmp_path / "pid"
    api.run_pod("web", ["sh", "-c", f"echo $$ > {shlex.quote(str(pid_file))}; exec sleep 600"])
    pid = int(
        api.wait_for(
            lambda: pid_file.exists() and pid_file.read_text().strip(), message="the pid file"
        )
    )
    api.kubectl("delete", "pod", "web", "--wait=false")

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    assert api.wait_for(gone, message="the process to be killed")


def test_port_forward_with_the_python_client(kube_api: KubeAPI, echo_port: int) -> None:
    """The ``kubernetes`` client speaks the v4 channel protocol (``ports`` in the query)."""
    import kubernetes
    from kubernetes.stream import portforward

    api = kube_api
    api.run_pod("web", ports={8080: echo_port})
    with api.api_client() as client:
        core = kubernetes.client.CoreV1Api(client)
        forward = portforward(
            core.connect_get_namespaced_pod_portforward, "web", "default", ports="8080"
        )
        conn = forward.socket(8080)
        try:
            conn.settimeout(20)
            conn.sendall(b"ping")
            assert conn.recv(4, socket.MSG_WAITALL) == b"ping"
        finally:
            forward.close()
            forward.websocket.close()
        assert forward.error(8080) is None


def test_stopping_the_emulator_ends_open_forwards(tmp_path: Path, echo_port: int) -> None:
    api = KubeAPI(tmp_path / "kube").start()
    try:
        api.run_pod("web", ports={8080: echo_port})
        process, port = _forward(api, "pod/web", ":8080")
        with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
            conn.sendall(b"x")
            assert conn.recv(1) == b"x"
            stopping = threading.Thread(target=api.stop)
            stopping.start()
            stopping.join(10)  # the thread joins the emulator's for up to 30 s when stuck
            assert not stopping.is_alive(), "the emulator waited for the port-forward client"
    finally:
        api.stop()
        process.terminate()
        process.communicate(timeout=10)
    assert api.errors == []


def test_attach_to_a_terminal(kube_api: KubeAPI, tmp_path: Path) -> None:
    """``kubectl attach -it`` to a container with ``tty: true``: typed lines reach its main
    process through its terminal, which echoes them, and its exit status comes back."""
    script = 'while read l; do echo "got $l"; [ "$l" = quit ] && exit 5; done'
    kube_api.run_pod("shell", ["sh", "-c", script], tty=True, stdin=True)
    command = shlex.join(kube_api.kubectl_command("attach", "-it", "shell"))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "xterm", "PS1": "$ "}
    terminal = Terminal(["bash", "--norc", "--noprofile"], env=env, cwd=str(tmp_path))
    try:
        status, output = terminal.run(
            command,
            "ATTACH-EXIT",
            [Prompt(re.compile(r"pressing enter\.\s*$"), lambda _: "quit")],
            30,
        )
    finally:
        terminal.close()
    assert status == 5
    assert "quit\ngot quit\n" in output  # the pod's terminal echoed the line, then its answer
