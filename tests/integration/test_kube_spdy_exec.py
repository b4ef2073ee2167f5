"""``kubectl exec`` over SPDY/3.1 through Limen (issue #15: "SPDY where a client still uses
it"): the real kubectl with ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``, against the project's
Kubernetes API emulator (which serves exec over SPDY, ``tests/k8s_emulator/podexec_spdy.py``,
and shows the ``Upgrade: SPDY/3.1`` it received), through the proxy and the kube agent of a
single-node cluster (``kube_env``).

- ``exec -it`` driven in a pseudo-terminal is recorded: ``lmsh play`` replays its output and
  the terminal resize is in the recording, its ``kube.request`` and ``kube.session.end`` name
  the recording, the typed keys are not in it;
- ``attach -it`` is recorded the same way;
- a non-interactive exec is audited with its command and not recorded;
- under ``record_session: strict`` (refused before the kube agent could read SPDY) an
  ``exec -it`` over SPDY now goes through, recorded;
- attack: a client (``spdy_exec_client``) sends a decompression bomb in a header block
  mid-session: the recording stops at its bound, audited on the session's end; the session
  goes on, unless the roles require recording (strict), which ends it.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from limen.agents.kube.spdy import SynStream
from limen.recording import read_cast, recordings_dir

from .cluster import wait_for
from .kube_env import KubeEnv, KubePerson, start_kube_env
from .spdy_exec_client import SpdyExec

STRICT_ROLE = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: kube-strict}
spec:
  options: {record_session: {default: strict}}
  allow:
    kubernetes_labels: {env: dev}
    kubernetes_groups: [developers]
    kubernetes_resources: [{kind: pod, namespace: default, verbs: ['*']}]
    rules:
    - {resources: [session], verbs: [list, read],
       where: 'contains(session.participants, user.metadata.name)'}
"""

PROMPT = b"# " if os.geteuid() == 0 else b"$ "
"""What the pod's ``sh`` prompts with (the pod runs as the test's user)."""


@pytest.fixture(scope="module")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    yield from start_kube_env(tmp_path_factory.mktemp("kube-spdy"))


def spdy(person: KubePerson) -> dict[str, str]:
    """The person's environment with kubectl told to speak SPDY for exec."""
    return {**person.env, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false"}


def _read_until(master: int, seen: bytearray, expect: bytes, deadline: float,
                start: int = 0) -> None:
    """Read the terminal into ``seen`` until ``expect`` shows after ``start``."""
    while expect not in seen[start:]:
        left = deadline - time.monotonic()
        assert left > 0, f"{expect!r} never showed; saw {bytes(seen)!r}"
        ready, _, _ = select.select([master], [], [], left)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                data = b""
            assert data, f"the terminal closed before {expect!r}; saw {bytes(seen)!r}"
            seen += data


def exec_in_pty(env: dict[str, str], pod: str) -> bytes:
    """``kubectl exec -it POD -- sh`` on a new 80x24 pseudo-terminal: resized to 120x40 once
    the shell prompts, then the shell prints its size and a sum and exits."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen(["kubectl", "exec", "-it", pod, "--", "sh"], env=env,
                               stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + 30.0
    try:
        _read_until(master, seen, PROMPT, deadline)
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.kill(process.pid, signal.SIGWINCH)
        # the size reaches the pod's terminal over the resize stream: ask until it shows
        answer = b""
        while b"40 120" not in answer:
            start = len(seen)
            os.write(master, b"stty size\r")
            _read_until(master, seen, PROMPT, deadline, start)
            answer = bytes(seen[start:])
        os.write(master, b"echo $((6*7))ok; exit\r")
        _read_until(master, seen, b"42ok", deadline)
        assert process.wait(timeout=max(deadline - time.monotonic(), 1)) == 0
        return bytes(seen)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)


def _exec_events(kube_env: KubeEnv, user: str, pod: str) -> list[dict[str, Any]]:
    return [e for e in kube_env.audit(user=user, verb="exec") if e.get("name") == pod]


def _emulator_upgrades(kube_env: KubeEnv, pod: str, what: str = "exec") -> list[str]:
    """The ``Upgrade`` header of each ``what`` request the emulator received for ``pod``."""
    return [request.headers.get("Upgrade", "") for request in list(kube_env.api.emulator)
            if request.subresource == what and request.name == pod]


def _recording(kube_env: KubeEnv, person: KubePerson, event: dict[str, Any]) -> Path:
    recording = event["recording"]

    def listed() -> bool:
        out = person.lmsh("recordings", "ls", "-o", "json").stdout
        return recording in {r["session_id"] for r in json.loads(out)["items"]}

    wait_for(listed, 15.0, "the exec recording to be stored")
    return recordings_dir(kube_env.cluster.data_dir) / f"{recording}.cast"


def test_exec_it_over_spdy_is_recorded(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    kube_env.api.run_pod("spdy-shell", ["sh"], tty=True, stdin=True)
    seen = exec_in_pty(spdy(alice), "spdy-shell")
    assert b"42ok" in seen
    assert _emulator_upgrades(kube_env, "spdy-shell") == ["SPDY/3.1"]
    [event] = wait_for(lambda: [e for e in _exec_events(kube_env, "alice", "spdy-shell")
                                if e.get("recording")], 15.0, "the exec audited")
    assert (event["tty"], event["response_code"], event["protocol"]) == \
        (True, 101, "SPDY/3.1")
    assert event["command"] == ["sh"]
    [end] = [e for e in kube_env.cluster.audit("kube.session.end", user="alice")
             if e.get("recording") == event["recording"]]
    assert "recording_error" not in end
    played = alice.lmsh("play", event["recording"], "-o", "text").stdout
    assert "42ok" in played
    assert "40 120" in played
    cast = read_cast(_recording(kube_env, alice, event))
    assert "120x40" in [e.data for e in cast.events if e.code == "r"]
    assert all(e.code in ("o", "r") for e in cast.events)  # keystrokes are not recorded


def test_exec_without_a_terminal_over_spdy_is_audited_with_its_command(
        kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    kube_env.api.run_pod("spdy-batch", ["sh", "-c", "sleep 600"])
    out = subprocess.run(["kubectl", "exec", "spdy-batch", "--", "sh", "-c",
                          "echo from $((6*7)); echo oops >&2"], env=spdy(alice),
                         capture_output=True, timeout=30, check=True)
    assert (out.stdout, out.stderr) == (b"from 42\n", b"oops\n")
    assert _emulator_upgrades(kube_env, "spdy-batch") == ["SPDY/3.1"]
    [event] = wait_for(lambda: _exec_events(kube_env, "alice", "spdy-batch"), 15.0,
                       "the exec audited")
    assert event["command"] == ["sh", "-c", "echo from $((6*7)); echo oops >&2"]
    assert (event["tty"], event["response_code"], event["protocol"]) == \
        (False, 101, "SPDY/3.1")
    assert "recording" not in event


def test_attach_it_over_spdy_is_recorded(kube_env: KubeEnv) -> None:
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    kube_env.api.run_pod("spdy-attach", ["sh"], tty=True, stdin=True)
    master, slave = os.openpty()
    process = subprocess.Popen(["kubectl", "attach", "-it", "spdy-attach"], env=spdy(alice),
                               stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = bytearray()
    deadline = time.monotonic() + 30.0
    try:
        _read_until(master, seen, b"try pressing enter", deadline)
        start = len(seen)
        os.write(master, b"\r")  # attached mid-stream: a fresh prompt
        _read_until(master, seen, PROMPT, deadline, start)
        os.write(master, b"echo $((6*7))ok; exit\r")
        _read_until(master, seen, b"42ok", deadline)
        assert process.wait(timeout=max(deadline - time.monotonic(), 1)) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        os.close(master)
    assert _emulator_upgrades(kube_env, "spdy-attach", "attach") == ["SPDY/3.1"]
    [event] = wait_for(lambda: [e for e in kube_env.audit(user="alice", verb="attach")
                                if e.get("name") == "spdy-attach"], 15.0, "the attach audited")
    assert (event["tty"], event["response_code"], event["protocol"]) == \
        (True, 101, "SPDY/3.1")
    played = alice.lmsh("play", event["recording"], "-o", "text").stdout
    assert "42ok" in played


@pytest.fixture(scope="module")
def sam(kube_env: KubeEnv, tmp_path_factory: pytest.TempPathFactory) -> KubePerson:
    """A person whose only role requires recording (``record_session: strict``)."""
    files = tmp_path_factory.mktemp("strict")
    (files / "strict.yaml").write_text(STRICT_ROLE)
    kube_env.cluster.lmctl("apply", "-f", files / "strict.yaml")
    person = KubePerson(kube_env.cluster.signed_up_user("sam", roles=["kube-strict"]))
    person.user.login()
    person.lmsh("kube", "login", "emu")
    return person


def test_strict_recording_accepts_spdy_exec_and_records_it(kube_env: KubeEnv,
                                                           sam: KubePerson) -> None:
    kube_env.api.run_pod("spdy-strict", ["sh"], tty=True, stdin=True)
    seen = exec_in_pty(spdy(sam), "spdy-strict")
    assert b"42ok" in seen
    assert _emulator_upgrades(kube_env, "spdy-strict") == ["SPDY/3.1"]
    [event] = wait_for(lambda: _exec_events(kube_env, "sam", "spdy-strict"), 15.0,
                       "the exec audited")
    assert (event["response_code"], event["protocol"]) == (101, "SPDY/3.1")
    assert event.get("success") is not False
    played = sam.lmsh("play", event["recording"], "-o", "text").stdout
    assert "42ok" in played


def _bomb() -> SynStream:
    """A stream whose header block is 8 MiB inflated (a few KiB on the wire)."""
    return SynStream(9, {"streamtype": ("bomb",), "x-bomb": ("a" * (8 << 20),)})


def _session_end(kube_env: KubeEnv, user: str, pod: str) -> dict[str, Any]:
    [end] = wait_for(lambda: [e for e in kube_env.cluster.audit("kube.session.end", user=user)
                              if e.get("name") == pod], 15.0, "the session's end audited")
    return end


def test_a_decompression_bomb_ends_the_recording_not_the_session(kube_env: KubeEnv,
                                                                  tmp_path: Path) -> None:
    """Attack: a client sends a header block that inflates to 8 MiB mid-session. The kube
    agent stops reading for the recording at its 64 KiB bound (audited once on the session's
    end), the relay and the agent go on (the user's role does not require recording)."""
    alice = kube_env.alice
    alice.lmsh("kube", "login", "emu")
    kube_env.api.run_pod("spdy-bomb", ["sh"], tty=True, stdin=True)
    session = SpdyExec(alice, tmp_path, "spdy-bomb")
    try:
        session.read_until(PROMPT)
        session.type(b"echo $((6*7))ok\r")
        session.read_until(b"42ok")
        session.send(_bomb())
        session.type(b"echo $((7*7))after\r")
        session.read_until(b"49after")
        session.type(b"exit\r")
        session.wait_closed()
    finally:
        session.close()
    end = _session_end(kube_env, "alice", "spdy-bomb")
    assert "inflates to more than 65536 bytes" in end["recording_error"]
    played = alice.lmsh("play", end["recording"], "-o", "text").stdout
    assert "42ok" in played
    assert "49after" not in played
    out = alice.kubectl("get", "pod", "spdy-bomb", "-o", "name").stdout  # the agent lives
    assert out.strip() == "pod/spdy-bomb"


def test_a_decompression_bomb_ends_a_session_that_must_be_recorded(
        kube_env: KubeEnv, sam: KubePerson, tmp_path: Path) -> None:
    """Attack: the same bomb under ``record_session: strict``: the session cannot be recorded
    on, so the agent ends it, audited on its end with the reason."""
    kube_env.api.run_pod("spdy-bomb-strict", ["sh"], tty=True, stdin=True)
    session = SpdyExec(sam, tmp_path, "spdy-bomb-strict")
    try:
        session.read_until(PROMPT)
        session.type(b"echo $((6*7))ok\r")
        session.read_until(b"42ok")
        session.send(_bomb())
        session.wait_closed()
    finally:
        session.close()
    end = _session_end(kube_env, "sam", "spdy-bomb-strict")
    assert "inflates to more than 65536 bytes" in end["recording_error"]
    played = sam.lmsh("play", end["recording"], "-o", "text").stdout
    assert "42ok" in played
    out = sam.kubectl("get", "pod", "spdy-bomb-strict", "-o", "name").stdout
    assert out.strip() == "pod/spdy-bomb-strict"
