"""The exec WebSocket of the Kubernetes API emulator at the wire level: the channel bytes of
``v5.channel.k8s.io`` and ``v4.channel.k8s.io`` as a client other than kubectl sees them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websocket

from k8s_emulator.fixtures import TOKEN, KubeAPI


def _session(api: KubeAPI, protocol: str, query: str) -> tuple[str, list[tuple[int, bytes]]]:
    """Run one exec session, sending stdin "abc" (and, in v5, closing it); return the
    negotiated protocol and every (channel, data) message received."""
    url = (
        api.url.replace("https://", "wss://") + f"/api/v1/namespaces/default/pods/web/exec?{query}"
    )
    ws = websocket.create_connection(
        url,
        subprotocols=[protocol],
        sslopt={"ca_certs": str(api.ca_file)},
        header=[f"Authorization: Bearer {TOKEN}"],
        timeout=20,
    )
    received: list[tuple[int, bytes]] = []
    try:
        ws.send_binary(b"\x00abc")
        if protocol.startswith("v5"):
            ws.send_binary(b"\xff\x00")  # no more stdin
        while True:
            opcode, data = ws.recv_data(control_frame=False)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            assert opcode == websocket.ABNF.OPCODE_BINARY
            received.append((data[0], data[1:]))
        return ws.subprotocol, received
    finally:
        ws.close()
        ws.shutdown()  # close() leaves the socket open once the server has closed first


def _status(received: list[tuple[int, bytes]]) -> Any:
    [status] = [json.loads(data) for channel, data in received if channel == 3]
    return status


@pytest.mark.parametrize("protocol", ["v5.channel.k8s.io", "v4.channel.k8s.io"])
def test_exec_channels(kube_api: KubeAPI, protocol: str) -> None:
    kube_api.run_pod("web")
    command = "command=sh&command=-c&command=" + ("head -c 3; echo; echo oops >&2; exit 2").replace(
        " ", "+"
    ).replace(";", "%3B").replace(">", "%3E").replace("&", "%26")
    negotiated, received = _session(
        kube_api, protocol, f"{command}&stdin=true&stdout=true&stderr=true"
    )
    assert negotiated == protocol
    assert received[0] == (1, b"")  # the empty first message on the lowest output channel
    assert b"".join(d for c, d in received if c == 1) == b"abc\n"
    assert b"".join(d for c, d in received if c == 2) == b"oops\n"
    assert _status(received) == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: error executing command "
        "[sh -c head -c 3; echo; echo oops >&2; exit 2], exit code 2",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "2"}]},
    }
    assert received[-1][0] == 3  # the status comes last, then the server closes


def test_v5_closes_stdin(kube_api: KubeAPI) -> None:
    kube_api.run_pod("web")
    _, received = _session(kube_api, "v5.channel.k8s.io", "command=cat&stdin=true&stdout=true")
    assert b"".join(d for c, d in received if c == 1) == b"abc"
    assert _status(received) == {"metadata": {}, "status": "Success"}
