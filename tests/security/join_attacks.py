"""Helpers of the join attack tests (``test_join_*.py``): a raw ``/v1/webapi/join`` at a real
proxy, and a fake proxy: a tiny TLS server presenting a certificate signed by the cluster's CA
(with the CA in its chain and in its ping answer, as a stolen node certificate allows) that
records every byte it reads, so a test can assert what a client sent it."""

from __future__ import annotations

import json
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from integration.cluster import LimenCluster

from .attacks import https_post


def openssh_public_key(key: ed25519.Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def join(cluster: LimenCluster, token: str, *, role: str = "node", host_id: str = "",
         hostname: str = "evil", addresses: list[str] | None = None,
         proof: dict[str, Any] | None = None,
         key: ed25519.Ed25519PrivateKey | None = None) -> tuple[int, Any]:
    """POST /v1/webapi/join at the cluster's proxy, as any joiner could."""
    key = key or ed25519.Ed25519PrivateKey.generate()
    body: dict[str, Any] = {"token": token, "role": role, "host_id": host_id,
                            "hostname": hostname, "public_key": openssh_public_key(key),
                            "addresses": addresses or []}
    if proof is not None:
        body["proof"] = proof
    return https_post(cluster, cluster.web, "/v1/webapi/join", json.dumps(body).encode())


def sans(cert_pem: str) -> set[str]:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n) for n in names.get_values_for_type(x509.DNSName)} | \
        {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}


def key_pem(key: Any) -> bytes:
    data: bytes = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return data


class FakeProxy:
    """A TLS server on 127.0.0.1 presenting ``cert_pem`` + ``ca_pem`` with ``key``: answers
    ``GET /v1/webapi/ping`` like a proxy and anything else with 200 ``{}``; ``received`` holds
    every request it read (handshakes a client broke off leave nothing)."""

    def __init__(self, cert_pem: str, key: Any, ca_pem: str, cluster: str) -> None:
        self.received: list[bytes] = []
        self._ping = json.dumps({"cluster": cluster, "tls_ca": ca_pem,
                                 "second_factor": "otp"}).encode()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as tmp:
            chain = Path(tmp) / "chain.pem"
            chain.write_bytes(key_pem(key) + cert_pem.encode() + ca_pem.encode())
            self._context.load_cert_chain(chain)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FakeProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._sock.close()

    @property
    def everything(self) -> bytes:
        with self._lock:
            return b"".join(self.received)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        try:
            with self._context.wrap_socket(conn, server_side=True) as tls:
                while request := _read_request(tls):
                    with self._lock:
                        self.received.append(request)
                    answer = self._ping if request.startswith(b"GET /v1/webapi/ping") else b"{}"
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                b"Content-Length: " + str(len(answer)).encode() +
                                b"\r\n\r\n" + answer)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


def _read_request(tls: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = tls.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = tls.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
