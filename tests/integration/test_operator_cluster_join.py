"""A Cluster's proxies can join its auth: the operator's Cluster reconciler, run against the
API server fixture (``kube_api``) through the operator's own Kubernetes client, and the
``limen.yaml`` / environment it gives the pods read back with ``limen.config``.

Checked here: the auth certificate names (``auth.server_names`` = the auth Service's DNS
names), the proxy token Secret (generated once, owned, mounted into auth as
``auth.proxy_token_file``, given to the proxies as ``LIMEN_TOKEN``), ``LIMEN_AUTH_SERVER`` and
``LIMEN_CA_PIN`` (the pin of the TLS CA in the CA Secret, which the join check accepts).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest

from k8s_emulator.fixtures import KubeAPI
from limen.ca.authority import CertAuthorityType
from limen.ca.keys import pin_matches
from limen.config import load_settings
from limen.operator.ca_secret import read_secret_data, tls_ca_pin
from limen.operator.cluster import ClusterReconciler
from limen.operator.cluster_builders import PROXY_TOKEN_FILE
from limen.operator.conditions import find
from limen.operator.context import OperatorContext
from limen.operator.kube import KubeApi
from limen.operator.settings import OperatorConfig

LOG = logging.getLogger("test")
NS = "limen"
SERVICE_NAMES = ["main-auth", "main-auth.limen", "main-auth.limen.svc",
                 "main-auth.limen.svc.cluster.local"]


def cluster_body(uid: str, generation: int = 1, replicas: int = 2) -> dict[str, Any]:
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "main", "namespace": NS, "uid": uid, "generation": generation},
            "spec": {"public_address": "limen.example.com:443",
                     "proxy": {"replicas": replicas, "service_type": "ClusterIP"}}}


class Reconciling:
    """The Cluster reconciler with a real KubeApi on the fixture (no kopf loop needed)."""

    def __init__(self, kube: KubeApi) -> None:
        self.ctx = OperatorContext(config=OperatorConfig(image="limen:test"), kube=kube,
                                   post_event=lambda *_: None)
        self.reconciler = ClusterReconciler(self.ctx)

    async def run(self, body: dict[str, Any]) -> dict[str, Any]:
        patch = kopf.Patch()
        await self.reconciler.reconcile(body, patch, LOG, retry=False)
        body.setdefault("status", {}).update(dict(patch.get("status") or {}))
        return body


@pytest.fixture
async def operator_kube(kube_api: KubeAPI) -> AsyncIterator[Reconciling]:
    kube_api.create_namespace(NS)
    kube = KubeApi(kube_api.api_client())
    try:
        yield Reconciling(kube)
    finally:
        await kube.close()


def container(deployment: dict[str, Any] | None) -> dict[str, Any]:
    assert deployment is not None
    [found] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(found)


def env_of(deployment: dict[str, Any] | None) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


async def test_proxies_get_what_they_join_with(kube_api: KubeAPI,
                                               operator_kube: Reconciling,
                                               tmp_path: Path) -> None:
    body = await operator_kube.run(cluster_body("uid-1"))
    ready = find(body["status"]["conditions"], "Ready")
    assert ready is not None
    assert ready["reason"] == "Progressing", ready

    # the proxy token Secret: owned, labelled, a long random token
    secret = kube_api.get("secrets", "main-proxy-token", NS)
    assert secret is not None
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Cluster", "uid-1", True)
    assert secret["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "limen-operator"
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) >= 32

    # limen.yaml: the auth certificate carries the Service's names; auth reads the token file
    config_map = kube_api.get("configmaps", "main-config", NS)
    assert config_map is not None
    (tmp_path / "limen.yaml").write_text(config_map["data"]["limen.yaml"])
    settings = load_settings(tmp_path / "limen.yaml", env={})
    assert list(settings.auth.server_names) == SERVICE_NAMES
    assert settings.auth.proxy_token_file == PROXY_TOKEN_FILE

    # the auth pod mounts the token Secret where the config says
    auth = kube_api.get("deployments", "main-auth", NS)
    assert auth is not None
    pod = auth["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container(auth)["volumeMounts"] if m["name"] == "proxy-token")
    assert volumes["proxy-token"]["secret"]["secretName"] == "main-proxy-token"
    assert f"{mount['mountPath']}/token" == PROXY_TOKEN_FILE
    assert container(auth)["env"] == [{"name": "TMPDIR", "value": "/tmp"},  # joins nobody
                                      {"name": "USER", "value": "limen"}]

    # the proxy pods: the auth Service address, the token from the Secret, the TLS CA's pin
    proxy = kube_api.get("deployments", "main-proxy", NS)
    env = env_of(proxy)
    assert env["LIMEN_TOKEN"] == {"secretKeyRef": {"name": "main-proxy-token", "key": "token"}}
    ca_secret = kube_api.get("secrets", "main-ca", NS)
    assert ca_secret is not None
    assert env["LIMEN_CA_PIN"] == tls_ca_pin(ca_secret["data"])
    _cluster, cas = read_secret_data(ca_secret["data"])
    assert any(pin_matches(env["LIMEN_CA_PIN"], cert)  # the check a joining proxy makes
               for cert in cas[CertAuthorityType.TLS].trusted_certificates())
    assert env["LIMEN_AUTH_SERVER"] == "main-auth.limen.svc:3025"
    assert env["LIMEN_AUTH_SERVER"].split(":")[0] in settings.auth.server_names
    proxy_settings = load_settings(tmp_path / "limen.yaml", env={
        "LIMEN_AUTH_SERVER": env["LIMEN_AUTH_SERVER"], "LIMEN_CA_PIN": env["LIMEN_CA_PIN"],
        "LIMEN_TOKEN": token})
    assert (proxy_settings.join.auth_server, proxy_settings.join.ca_pin,
            proxy_settings.join.token) == (env["LIMEN_AUTH_SERVER"], env["LIMEN_CA_PIN"], token)

    # a spec change rolls the proxies but never regenerates the token
    await operator_kube.run(cluster_body("uid-1", generation=2, replicas=3))
    proxy = kube_api.get("deployments", "main-proxy", NS)
    assert proxy is not None
    assert proxy["spec"]["replicas"] == 3
    again = kube_api.get("secrets", "main-proxy-token", NS)
    assert again is not None
    assert again["data"] == secret["data"]


async def test_a_tls_rotation_changes_the_proxies_pin(kube_api: KubeAPI,
                                                      operator_kube: Reconciling) -> None:
    body = await operator_kube.run(cluster_body("uid-2"))
    before = env_of(kube_api.get("deployments", "main-proxy", NS))["LIMEN_CA_PIN"]
    body["spec"]["ca_rotation"] = {"type": "tls", "nonce": "one"}
    body["metadata"]["generation"] = 2
    await operator_kube.run(body)
    after = env_of(kube_api.get("deployments", "main-proxy", NS))["LIMEN_CA_PIN"]
    ca_secret = kube_api.get("secrets", "main-ca", NS)
    assert ca_secret is not None
    assert after != before
    assert after == tls_ca_pin(ca_secret["data"])


async def test_a_foreign_proxy_token_secret_is_left_alone(kube_api: KubeAPI,
                                                          operator_kube: Reconciling) -> None:
    kube_api.create({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "main-proxy-token", "namespace": NS},
                     "data": {"token": base64.b64encode(b"someone else's").decode()}})
    body = await operator_kube.run(cluster_body("uid-3"))
    owned = find(body["status"]["conditions"], "Owned")
    assert owned is not None
    assert (owned["status"], owned["reason"]) == ("False", "NotOwned")
    assert "Secret main-proxy-token" in owned["message"]
    secret = kube_api.get("secrets", "main-proxy-token", NS)
    assert secret is not None
    assert base64.b64decode(secret["data"]["token"]) == b"someone else's"
    assert not secret["metadata"].get("ownerReferences")
    assert kube_api.get("deployments", "main-proxy", NS) is None  # nothing deployed half-way
