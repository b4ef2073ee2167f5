"""The ``kube_api`` pytest fixture: a Kubernetes API emulator on HTTPS with Limen's CRDs.

A kube agent's cluster (authentication, RBAC, impersonation, pods that run)::

    def test_agent(kube_api_rbac):                   # or KubeAPI(path, authenticate=True)
        api = kube_api_rbac                          # api.kubeconfig_path: the admin
        agent = api.service_account("limen", "kube-agent")
        # agent.kubeconfig (token inside), agent.token, agent.token_file (0600), agent.user:
        # system:serviceaccount:limen:kube-agent in system:serviceaccounts(:limen). It may
        # do nothing until bound, like a fresh service account; e.g. impersonation only:
        api.create({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "impersonator"},
                    "rules": [{"apiGroups": [""], "resources": ["users", "groups"],
                               "verbs": ["impersonate"]}]})
        api.create({"apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding", "metadata": {"name": "impersonator"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                "kind": "ClusterRole", "name": "impersonator"},
                    "subjects": [{"kind": "ServiceAccount", "name": "kube-agent",
                                  "namespace": "limen"}]})
        # Roles/RoleBindings for the impersonated groups decide what users may do (403
        # with kube-apiserver's message otherwise); system:masters may do anything.
        api.run_pod("web", ["sh", "-c", "echo up; sleep infinity"],
                    ports={8080: echo_port}, tty=False, stdin=False, env={"K": "v"})
        # a Running Pod "web" in "default" whose container "main" is that local process:
        # kubectl exec/attach/logs -f/port-forward reach it (port 8080 -> 127.0.0.1:echo_port)
        api.kubectl("auth", "whoami", "--as", "alice", kubeconfig=agent.kubeconfig)
        api.audit_events()  # what the API server saw: user, impersonatedUser, verb, code

Other identities: ``api.user_credentials("bob", ["ops"])`` (a token),
``api.certificate_credentials("bob", ["ops"])`` (a client certificate signed by the
emulator's CA, ``api.ca_file``). Pods created through the API run when annotated
``k8s-emulator.test/local-process: "true"`` (see ``pods.py``); others stay Pending.
``api.request_as(method, path, token=..., headers=...)`` sends one raw request.

Registered for the whole suite by ``tests/conftest.py`` (``kube_api``, ``kube_api_rbac``). The
emulator (``apiserver.py``, on HTTPS with ``server.py`` and ``tls.py``) runs on its own event
loop in a thread, so synchronous code (the ``kubernetes`` client, kubectl in a subprocess), kopf
in a thread or subprocess, and async tests can all use it. Usage::

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
import builtins
import copy
import dataclasses
import functools
import http.client
import json
import os
import secrets
import shlex
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
import yaml

from .apiserver import KubeAPIEmulator
from .authn import Authenticator
from .errors import ApiError
from .pods import LOCAL_PROCESS, PORTS
from .rbac import bootstrap_policy
from .registry import ResourceType
from .server import HTTPSServer
from .store import ObjectStore
from .tls import client_certificate, tls_material
from .users import ADMIN, UserInfo, service_account_groups, service_account_user

__all__ = ["CRD_DIR", "ApiError", "Credentials", "KubeAPI", "kube_api", "kube_api_rbac"]

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"
TOKEN = "kube-api-test-token"  # the admin's, in the kubeconfig (system:masters)
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Credentials:
    """An identity minted for a test: a kubeconfig using it, and the token or the client
    certificate in it (files 0600)."""

    user: UserInfo
    kubeconfig: Path
    token: str = ""
    token_file: Path | None = None
    certificate: Path | None = None
    key: Path | None = None


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

    def __init__(
        self, workdir: Path, crd_dir: Path | None = CRD_DIR, *, authenticate: bool = False
    ) -> None:
        self.workdir = workdir
        self.crd_dir = crd_dir
        self.authenticate = authenticate
        self._authenticator = Authenticator({TOKEN: ADMIN}) if authenticate else None
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
        if self._authenticator is not None:  # client certificates signed by the CA count
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cadata=ca_pem.decode())
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        emulator = KubeAPIEmulator(authenticator=self._authenticator)
        emulator.store.listeners.append(self._on_change)
        async with emulator, HTTPSServer(emulator, ssl_context=context) as server:
            self._emulator = emulator
            emulator.run_pods(self.workdir / "pods")
            emulator.server_address = f"127.0.0.1:{server.port}"
            self.url = f"https://127.0.0.1:{server.port}"
            self._write_kubeconfig(self.kubeconfig_path, {"token": TOKEN})
            if self.crd_dir is not None:
                self.install_crds(*sorted(self.crd_dir.glob("*.yaml")))
            if self._authenticator is not None:
                for doc in bootstrap_policy():
                    self.create(doc)
            self._ready.set()
            await self._stop.wait()
            self.errors = list(emulator.errors)

    def _write_kubeconfig(self, path: Path, user: Mapping[str, Any]) -> None:
        ca_pem = self.ca_file.read_bytes()
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
            "users": [{"name": "kube-api-test", "user": dict(user)}],
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
        _write_private(path, yaml.safe_dump(config).encode())

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

    # ---- identities (authenticated mode) ------------------------------------------------

    def _credentials_dir(self, name: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-." else "_" for c in name)
        return self.workdir / "identities" / safe

    def _register(self, token: str, user: UserInfo) -> None:
        authenticator = self._authenticator
        if authenticator is None:
            raise RuntimeError("identities need KubeAPI(..., authenticate=True)")

        def register(store: ObjectStore) -> None:
            authenticator.tokens[token] = user

        self.call(register)

    def user_credentials(
        self, username: str, groups: Sequence[str] = (), *, uid: str = ""
    ) -> Credentials:
        """A bearer token for ``username`` in ``groups`` (a static token file's user)."""
        user = UserInfo(username, uid=uid, groups=tuple(groups))
        return self._token_credentials(user, self._credentials_dir(username))

    def service_account(self, namespace: str, name: str) -> Credentials:
        """Create the ServiceAccount (and its namespace if missing) and a token for it: user
        ``system:serviceaccount:<namespace>:<name>``, its uid, the service-account groups."""
        if self.get("namespaces", namespace, None) is None:
            self.create_namespace(namespace)
        account = self.get("serviceaccounts", name, namespace) or self.create(
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            }
        )
        user = UserInfo(
            service_account_user(namespace, name),
            uid=account["metadata"]["uid"],
            groups=service_account_groups(namespace),
        )
        return self._token_credentials(user, self._credentials_dir(f"sa-{namespace}-{name}"))

    def _token_credentials(self, user: UserInfo, directory: Path) -> Credentials:
        token = secrets.token_urlsafe(32)
        self._register(token, user)
        token_file = directory / "token"
        _write_private(token_file, token.encode())
        kubeconfig = directory / "kubeconfig"
        self._write_kubeconfig(kubeconfig, {"token": token})
        return Credentials(user, kubeconfig, token=token, token_file=token_file)

    def certificate_credentials(self, username: str, groups: Sequence[str] = ()) -> Credentials:
        """A client certificate (``CN`` username, ``O`` groups) signed by the emulator's CA."""
        if self._authenticator is None:
            raise RuntimeError("identities need KubeAPI(..., authenticate=True)")
        cert_pem, key_pem = client_certificate(username, tuple(groups))
        directory = self._credentials_dir(f"cert-{username}")
        certificate, key = directory / "client.crt", directory / "client.key"
        _write_private(certificate, cert_pem)
        _write_private(key, key_pem)
        kubeconfig = directory / "kubeconfig"
        self._write_kubeconfig(
            kubeconfig, {"client-certificate": str(certificate), "client-key": str(key)}
        )
        user = UserInfo(username, groups=tuple(groups))
        return Credentials(user, kubeconfig, certificate=certificate, key=key)

    def audit_events(self) -> builtins.list[dict[str, Any]]:
        """Every request the emulator answered so far, as kube-apiserver's audit log events
        (``user``, ``impersonatedUser``, ``verb``, ``objectRef``, ``responseStatus.code``)."""
        emulator = self.emulator
        return self.call(lambda store: copy.deepcopy(emulator.audit))

    # ---- pods that run ------------------------------------------------------------------

    def run_pod(
        self,
        name: str,
        command: Sequence[str] = ("sleep", "infinity"),
        *,
        namespace: str = "default",
        container: str = "main",
        tty: bool = False,
        stdin: bool = False,
        env: Mapping[str, str] | None = None,
        ports: Mapping[int, int] | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Create a Pod whose container runs ``command`` on this machine (see ``pods.py``)
        and return it once Running. ``ports`` maps container ports (declared in the spec)
        to the local ports ``port-forward`` reaches."""
        annotations = {LOCAL_PROCESS: "true"}
        if ports:
            annotations[PORTS] = ",".join(f"{c}={local}" for c, local in ports.items())
        spec: dict[str, Any] = {
            "name": container,
            "image": "local",
            "command": list(command),
            "tty": tty,
            "stdin": stdin,
            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        }
        if ports:
            spec["ports"] = [{"containerPort": c, "protocol": "TCP"} for c in ports]
        self.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
                "spec": {"containers": [spec], "restartPolicy": "Never"},
            }
        )
        def started() -> dict[str, Any]:
            pod = self.get("pods", name, namespace) or {}
            return pod if pod.get("status", {}).get("phase") in ("Running", "Failed") else {}

        return self.wait_for(started, timeout, f"pod {namespace}/{name} to run")

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

    def request_as(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
        timeout: float = 10.0,
    ) -> tuple[int, Any]:
        """Like :meth:`request`, with a bearer ``token`` (the admin's by default, None for
        none) and extra ``headers``; ``raw`` returns the body as text instead of JSON."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        connection = http.client.HTTPSConnection(
            self.url.removeprefix("https://"), context=context, timeout=timeout
        )
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            sent["Content-Type"] = "application/json"
        try:
            connection.request(method, path, data, sent)
            response = connection.getresponse()
            answer = response.read()
        finally:
            connection.close()
        if raw:
            return response.status, answer.decode()
        return response.status, json.loads(answer) if answer else None

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

    def kubectl_command(self, *args: str, kubeconfig: Path | None = None) -> list[str]:
        """The kubectl command line :meth:`kubectl` runs (for a test that runs it itself)."""
        return [
            "kubectl",
            "--kubeconfig",
            str(kubeconfig or self.kubeconfig_path),
            "--cache-dir",
            str(self.workdir / "kubectl-cache"),
            *args,
        ]

    def kubectl(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 30.0,
        input: str | None = None,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against the emulator (own discovery cache, no ~/.kube writes),
        as the admin or with another ``kubeconfig`` (a minted identity's)."""
        command = self.kubectl_command(*args, kubeconfig=kubeconfig)
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, input=input, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{shlex.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
            )
        return result

    def api_client(self) -> Any:
        """A ``kubernetes.client.ApiClient`` configured from the kubeconfig."""
        import kubernetes

        return kubernetes.config.new_client_from_config(config_file=str(self.kubeconfig_path))


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


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


@pytest.fixture
def kube_api_rbac(tmp_path: Path) -> Iterator[KubeAPI]:
    """Like ``kube_api``, with authentication and RBAC (``KubeAPI(..., authenticate=True)``)."""
    api = KubeAPI(tmp_path / "kube-api", authenticate=True).start()
    try:
        yield api
    finally:
        api.stop()
    if api.errors:
        pytest.fail(f"the Kubernetes API emulator failed internally: {api.errors!r}")
