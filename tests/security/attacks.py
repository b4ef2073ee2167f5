"""Helpers shared by the attack tests: raw HTTPS calls to a running cluster's listeners with
or without the admin client certificate, and a check that a daemon logged no traceback."""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path
from typing import Any

from integration.cluster import LimenCluster


def https_post(cluster: LimenCluster, address: str, path: str, body: bytes, *,
               client_cert: bool = False, timeout: float = 30.0) -> tuple[int, Any]:
    """POST ``body`` as JSON to ``address`` (trusting the cluster's TLS CA); ``client_cert``:
    present the admin identity of DATA_DIR/admin. Returns the status and the parsed answer."""
    admin = cluster.data_dir / "admin"
    context = ssl.create_default_context(cafile=str(admin / "cas.pem"))
    if client_cert:
        context.load_cert_chain(str(admin / "tls.crt"), str(admin / "key.pem"))
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=timeout)
    try:
        connection.request("POST", path, body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        text = response.read()
    finally:
        connection.close()
    return response.status, json.loads(text) if text else None


def assert_no_traceback(cluster: LimenCluster) -> None:
    """The daemon's log holds no traceback and no internal error."""
    output = cluster.output()
    assert "Traceback" not in output, output[-4000:]
    assert "internal error" not in output, output[-4000:]


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
