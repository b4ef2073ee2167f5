"""An interactive ``exec`` over SPDY/3.1 spoken by hand through Limen's kube front, for the
attacks kubectl would not make (a decompression bomb in a header block, mid-session).

Used by ``test_kube_spdy_exec.py``. It connects with the person's own kube certificate
(``lmsh kube credentials``) to the server of their kubeconfig, asks to upgrade
``pods/NAME/exec`` to ``SPDY/3.1`` (``v4.channel.k8s.io``) with a terminal, opens the
``error``, ``stdin``, ``stdout`` and ``resize`` streams as client-go does, and then types,
reads the terminal, or sends any frame in the client's own zlib stream. Frames are written and
read with Limen's codec (``limen.agents.kube.spdy``); blocking sockets with timeouts.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from limen.agents.kube.spdy import (
    DataFrame,
    Frame,
    Ping,
    SpdyDecoder,
    SpdyEncoder,
    SynReply,
    SynStream,
)

from .kube_env import KubePerson

__all__ = ["SpdyExec"]

STDIN, STDOUT = 3, 5
_ROLES = ((1, "error"), (STDIN, "stdin"), (STDOUT, "stdout"), (7, "resize"))


class SpdyExec:
    def __init__(self, person: KubePerson, tmp: Path, pod: str) -> None:
        config = yaml.safe_load(person.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        status = json.loads(person.lmsh("kube", "credentials", "--cluster", "emu").stdout)[
            "status"]
        (tmp / "c.pem").write_text(status["clientCertificateData"])
        (tmp / "k.pem").write_text(status["clientKeyData"])
        (tmp / "k.pem").chmod(0o600)
        context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
        context.load_cert_chain(tmp / "c.pem", tmp / "k.pem")
        context.set_alpn_protocols(["http/1.1"])
        server = urlsplit(cluster["server"])
        assert server.hostname is not None
        raw = socket.create_connection((server.hostname, server.port or 443), timeout=20)
        try:
            self.sock = context.wrap_socket(
                raw, server_hostname=cluster.get("tls-server-name") or server.hostname)
        except BaseException:
            raw.close()
            raise
        self.encoder = SpdyEncoder()
        self.decoder = SpdyDecoder()
        self.output = b""
        self.eof = False
        self._pending: list[Frame] = []
        try:
            self._upgrade(f"{server.path.rstrip('/')}/api/v1/namespaces/default/pods/{pod}"
                          "/exec?command=sh&stdin=true&stdout=true&tty=true",
                          f"{server.hostname}:{server.port}")
        except BaseException:
            self.sock.close()
            raise

    def _upgrade(self, path: str, host: str) -> None:
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
            "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
            "User-Agent: spdy-by-hand\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(4096)
            assert data, f"the connection closed during the upgrade: {head!r}"
            head += data
        head, rest = head.split(b"\r\n\r\n", 1)
        assert head.split(b" ")[1] == b"101", head
        self._frames(rest)
        for stream, role in _ROLES:
            self.send(SynStream(stream, {"streamtype": (role,)}))
        deadline = time.monotonic() + 20
        while len([f for f in self._pending if isinstance(f, SynReply)]) < len(_ROLES):
            assert time.monotonic() < deadline, "the streams were not answered"
            self._receive()

    def close(self) -> None:
        self.sock.close()

    def send(self, frame: Frame) -> None:
        self.sock.sendall(self.encoder.encode(frame))

    def type(self, keys: bytes) -> None:
        self.send(DataFrame(STDIN, keys))

    def _frames(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            if isinstance(frame, DataFrame) and frame.stream_id == STDOUT:
                self.output += frame.data
            elif isinstance(frame, Ping):
                self.send(frame)
            else:
                self._pending.append(frame)

    def _receive(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            data = b""
        if not data:
            self.eof = True
        self._frames(data)

    def read_until(self, expect: bytes, timeout: float = 20.0) -> bytes:
        """The terminal's output once ``expect`` is in it (AssertionError if it ends or
        times out first)."""
        deadline = time.monotonic() + timeout
        while expect not in self.output:
            assert not self.eof, f"the session ended before {expect!r}: {self.output!r}"
            assert time.monotonic() < deadline, f"no {expect!r} in {self.output!r}"
            self._receive()
        return self.output

    def wait_closed(self, timeout: float = 20.0) -> None:
        """Read until the connection closes (AssertionError if it stays open)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            assert time.monotonic() < deadline, f"still open; output {self.output!r}"
            self._receive()
