"""The ``kube_api`` pytest fixture: a Kubernetes API emulator on HTTPS with Limen's CRDs.

Registered for the whole suite by ``tests/conftest.py``. The emulator (``apiserver.py``, on
HTTPS with ``server.py`` and ``tls.py``) runs on its own event loop in a thread, so synchronous
code (the ``kubernetes`` client, kubectl in a subprocess), kopf in a thread or subprocess, and
async tests can all use it. Usage::

    def test_role(kube_api, monkeypatch):
        monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig_path))  # kopf, the client
        kube_api.create({"apiVersion": "limen.dev/v1alpha1", "kind": "Role",
                         "metadata": {"name": "dev", "namespace": "default"}, "spec": {}})
        role = kube_api.wait_for(lambda: (kube_api.get("lmrole", "dev") or {}).get("status"))
        kube_api.kubectl("get", "lmrole")                        # kubectl with the kubeconfig
        client = kube_api.api_client()                           # kubernetes.client.ApiClient

kopf: run ``kopf.operator(registry=..., standalone=True, clusterwide=True, stop_flag=...,
ready_flag=...)`` in a thread (see ``test_apiserver_clients.py``), or ``kopf run --standalone``
in a subprocess with ``KUBECONFIG`` set; a custom ``kopf.OperatorRegistry`` needs a
``@kopf.on.login`` handler (``kopf.login_with_kubeconfig``). Peering is not served: use
standalone mode. kubectl: ``apply``/``create -f`` need ``--validate=false`` (no OpenAPI
documents); imperative creates of built-in types (``kubectl create secret``) send protobuf,
which is answered 415, so apply YAML instead. Reactions on ``kube_api.emulator`` (kmock's DSL)
must be added through ``kube_api.call(...)`` (the emulator's thread).

Namespaces ``default``, ``kube-system``, ``kube-public`` and ``kube-node-lease`` exist; objects
in other namespaces need the namespace created first, as in a real cluster.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import http.client
import json
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
import yaml

from .apiserver import KubeAPIEmulator
from .errors import ApiError
from .registry import ResourceType
from .server import HTTPSServer
from .store import ObjectStore
from .tls import tls_material

__all__ = ["CRD_DIR", "ApiError", "KubeAPI", "kube_api"]

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
TOKEN = "kube-api-test-token"  # in the kubeconfig; the emulator accepts any credentials
T = TypeVar("T")


@functools.cache
def _load_yaml_docs(path: Path) -> tuple[dict[str, Any], ...]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as f:
        return tuple(doc for doc in yaml.load_all(f, Loader=loader) if doc)


class KubeAPI:
    """A running emulator (what ``kube_api`` yields): URL, kubeconfig, CA, and helpers.

    The helpers act on the store directly (same semantics as the HTTP API: resourceVersion,
    generation, finalizers, garbage collection, watch events) and return deep copies. Helper
    errors are :class:`ApiError` (``.code``, ``.reason``). ``resource`` arguments take kubectl
    names: ``"roles.limen.dev"``, ``"lmrole"``, ``"Role"``, ``"secrets"``, ``"deployments"``.
    ``namespace`` is ignored for cluster-scoped types.
    """

    def __init__(self, workdir: Path, crd_dir: Path | None = CRD_DIR) -> None:
        self.workdir = workdir
        self.crd_dir = crd_dir
        self.ca_file = workdir / "ca.crt"
        self.kubeconfig_path = workdir / "kubeconfig"
        self.url = ""
        self._emulator: KubeAPIEmulator | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._changed = threading.Condition()
        self._changes = 0
        self._thread = threading.Thread(target=self._run, name="kube-api", daemon=True)
        self.errors: list[Exception] = []  # unexpected emulator exceptions (bugs), kept at stop()

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the Kubernetes API emulator did not start")
        if self._failure is not None:
            raise RuntimeError("the Kubernetes API emulator failed to start") from self._failure
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported to start(); the thread must not die silently
            self._failure = e
            self._ready.set()

    async def _main(self) -> None:
        ca_pem, cert_pem, key_pem = tls_material()
        self.ca_file.write_bytes(ca_pem)
        (self.workdir / "server.crt").write_bytes(cert_pem)
        (self.workdir / "server.key").write_bytes(key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.workdir / "server.crt", self.workdir / "server.key")
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        emulator = KubeAPIEmulator()
        emulator.store.listeners.append(self._on_change)
        async with emulator, HTTPSServer(emulator, ssl_context=context) as server:
            self._emulator = emulator
            emulator.server_address = f"127.0.0.1:{server.port}"
            self.url = f"https://127.0.0.1:{server.port}"
            self._write_kubeconfig(ca_pem)
            if self.crd_dir is not None:
                self.install_crds(*sorted(self.crd_dir.glob("*.yaml")))
            self._ready.set()
            await self._stop.wait()
            self.errors = list(emulator.errors)

    def _write_kubeconfig(self, ca_pem: bytes) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "kube-api-test",
            "clusters": [
                {
                    "name": "kube-api-test",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": "kube-api-test", "user": {"token": TOKEN}}],
            "contexts": [
                {
                    "name": "kube-api-test",
                    "context": {
                        "cluster": "kube-api-test",
                        "user": "kube-api-test",
                        "namespace": "default",
                    },
                }
            ],
        }
        self.kubeconfig_path.write_text(yaml.safe_dump(config))

    def _on_change(self) -> None:
        with self._changed:
            self._changes += 1
            self._changed.notify_all()

    # ---- access -------------------------------------------------------------------------

    @property
    def emulator(self) -> KubeAPIEmulator:
        """The kmock handler: ``.objects`` (every version of every object), the requests
        (``list(emulator)``) and reactions (``emulator['get /version'] << 500``) that take
        precedence (not for ``.../namespaces`` collection URLs, which kmock 0.8 cannot parse)."""
        assert self._emulator is not None, "the emulator is not running"
        return self._emulator

    def call(self, fn: Callable[[ObjectStore], T]) -> T:
        """Run ``fn(store)`` on the emulator's loop (atomically) and return its result."""
        loop = self._loop
        assert loop is not None, "the emulator is not running"
        assert self._emulator is not None, "the emulator is not running"
        store = self._emulator.store
        try:
            if asyncio.get_running_loop() is loop:
                return fn(store)
        except RuntimeError:
            pass

        async def run() -> T:
            return fn(store)

        return asyncio.run_coroutine_threadsafe(run(), loop).result(30)

    def resource_type(self, resource: str) -> ResourceType:
        return self.call(lambda store: store.resolve(resource))

    def install_crds(self, *paths: Path) -> list[dict[str, Any]]:
        """Create the CustomResourceDefinitions in the YAML files (their types get served)."""
        return [
            self.create(doc)
            for path in paths
            for doc in _load_yaml_docs(path)
            if doc.get("kind") == "CustomResourceDefinition"
        ]

    def create(
        self, body: Mapping[str, Any], *, namespace: str | None = None, dry_run: bool = False
    ) -> dict[str, Any]:
        """Create an object (its type from ``apiVersion`` and ``kind``); returns it as stored."""

        def op(store: ObjectStore) -> dict[str, Any]:
            matches = [
                t
                for t in store.types.values()
                if t.api_version == body.get("apiVersion") and t.kind == body.get("kind")
            ]
            if not matches:
                raise ApiError(
                    404, "NotFound", f"no type {body.get('apiVersion')}/{body.get('kind')}"
                )
            rtype = matches[0]
            ns = (
                (namespace or body.get("metadata", {}).get("namespace") or "default")
                if rtype.namespaced
                else None
            )
            return copy.deepcopy(
                store.present(store.create(rtype, ns, dict(body), dry_run=dry_run), rtype)
            )

        return self.call(op)

    def get(
        self, resource: str, name: str, namespace: str | None = "default"
    ) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""

        def op(store: ObjectStore) -> dict[str, Any] | None:
            rtype = store.resolve(resource)
            try:
                return copy.deepcopy(store.present(store.get(rtype, namespace, name), rtype))
            except ApiError as e:
                if e.code == 404:
                    return None
                raise

        return self.call(op)

    def list(
        self, resource: str, namespace: str | None = None, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Objects in ``namespace`` (all namespaces if None), sorted by namespace and name."""
        from .selectors import parse_label_selector

        def op(store: ObjectStore) -> list[dict[str, Any]]:
            rtype = store.resolve(resource)
            objs = store.list(
                rtype, namespace if rtype.namespaced else None, parse_label_selector(label_selector)
            )
            return [copy.deepcopy(store.present(o, rtype)) for o in objs]

        return self.call(op)

    def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        namespace: str | None = "default",
        *,
        subresource: str | None = None,
        json_patch: bool = False,
    ) -> dict[str, Any]:
        """Merge-patch (or JSON-patch) an object or, with ``subresource="status"``, its status."""

        def op(store: ObjectStore) -> dict[str, Any]:
            rtype = store.resolve(resource)
            obj = store.patch(
                rtype,
                namespace,
                name,
                patch,
                "json" if json_patch else "merge",
                subresource=subresource,
            )
            return copy.deepcopy(store.present(obj, rtype))

        return self.call(op)

    def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = "default",
        *,
        propagation: str | None = None,
    ) -> bool:
        """Delete an object; True if it is gone, False while finalizers keep it."""
        return self.call(
            lambda store: store.delete(
                store.resolve(resource), namespace, name, propagation=propagation
            )[1]
        )

    def create_namespace(self, name: str) -> dict[str, Any]:
        return self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # ---- waiting and clients ------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """One HTTPS request (verified with the CA); returns the status and the decoded JSON."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connection = http.client.HTTPSConnection(
            self.url.removeprefix("https://"), context=context, timeout=timeout
        )
        try:
            data = None if body is None else json.dumps(body).encode()
            connection.request(method, path, data, {"Content-Type": content_type} if data else {})
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        return response.status, json.loads(raw) if raw else None

    def wait_for(
        self, check: Callable[[], T], timeout: float = 10.0, message: str = "the condition"
    ) -> T:
        """Re-evaluate ``check()`` after every change (and at least every 0.1 s) until it
        returns something truthy, which is returned; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._changes
            result = check()
            if result:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout} s waiting for {message}")
            with self._changed:
                self._changed.wait_for(
                    lambda seen=seen: self._changes != seen, timeout=min(remaining, 0.1)
                )

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 30.0, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against the emulator (own discovery cache, no ~/.kube writes)."""
        command = [
            "kubectl",
            "--kubeconfig",
            str(self.kubeconfig_path),
            "--cache-dir",
            str(self.workdir / "kubectl-cache"),
            *args,
        ]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
            )
        return result

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` configured from the kubeconfig."""
        import kubernetes

        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig_path))


@pytest.fixture
def kube_api(tmp_path: Path) -> Iterator[KubeAPI]:
    """A fresh emulator with Limen's CRDs for one test; fails the test on emulator bugs."""
    api = KubeAPI(tmp_path / "kube-api").start()
    try:
        yield api
    finally:
        api.stop()
    if api.errors:
        pytest.fail(f"the Kubernetes API emulator failed internally: {api.errors!r}")
