"""Database access in a Cluster the operator deploys: the proxy's database fronts (container and
Service ports ``postgres`` 5433 and ``mysql`` 3036, listeners on every interface) and the db
agents of ``spec.db`` (``limen.operator.db_agent``).

The builders against a golden file and ``limen.config``; then the Cluster reconciler run
through the operator's own Kubernetes client against the API emulator (``kube_api``): the db
token Secret auth reads and the agents join with, the agents' Deployment and limen.yaml, their
readiness in the Cluster's status, scaling to 0, and what is refused."""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_reconciling import Reconciling, condition, make_ready

from k8s_emulator.fixtures import KubeAPI
from limen.api.schemas import with_defaults
from limen.config import load_settings
from limen.operator.ca_secret import tls_ca_pin
from limen.operator.cluster_builders import DB_TOKEN_FILE, children, limen_config
from limen.operator.db_agent import db_agent_config, db_children

LOG = logging.getLogger("test")
NS = "limen"
PIN = "sha256:" + "ab" * 32
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "operator_db_agent.yaml"
GOLDEN_HEADER = (
    "# The db agents a Cluster runs (limen.operator.db_agent.db_children), checked by\n"
    "# tests/unit/test_operator_db_agent.py. Regenerate: LIMEN_UPDATE_GOLDEN=1 pytest that "
    "file.\n")
SELECTORS = [{"labels": {"env": "dev"}}, {"labels": {"team": "db-*"}}]


def cluster(db: dict[str, Any] | None = None, uid: str = "uid-main",
            generation: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"public_address": "limen.example.com:443"}
    if db is not None:
        spec["db"] = db
    return {"apiVersion": "limen.dev/v1alpha1", "kind": "Cluster",
            "metadata": {"name": "main", "namespace": NS, "uid": uid, "generation": generation},
            "spec": spec}


def by_kind(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


class _BlockStrings(yaml.SafeDumper):
    """Multi-line strings (the ConfigMap's limen.yaml) as readable ``|`` blocks."""


_BlockStrings.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def render(objects: list[dict[str, Any]]) -> str:
    return GOLDEN_HEADER + yaml.dump_all(objects, Dumper=_BlockStrings, sort_keys=True)


# -- builders ----------------------------------------------------------------------------------


def test_db_agents_match_the_golden_file() -> None:
    objects = db_children(cluster({"replicas": 2, "resources": SELECTORS}), "limen:1.0",
                          ca_pin=PIN)
    text = render(objects)
    if os.environ.get("LIMEN_UPDATE_GOLDEN"):
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
    assert list(yaml.safe_load_all(text)) == objects


def test_the_db_agent_pod_is_locked_down() -> None:
    objects = by_kind(db_children(cluster({"replicas": 1}), "img", ca_pin=PIN))
    pod = objects["Deployment", "main-db"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001,
                                      "runAsGroup": 10001, "fsGroup": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    [container] = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False,
                                             "readOnlyRootFilesystem": True,
                                             "capabilities": {"drop": ["ALL"]}}
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/var/lib/limen", "/tmp"}  # the data directory is made in the first
    assert all("emptyDir" in volumes[m["name"]] for m in container["volumeMounts"]
               if m["mountPath"] in writable)
    # the token only from the Secret, never on the command line
    assert [e["name"] for e in container["env"]] == ["TMPDIR", "USER", "LIMEN_TOKEN"]
    assert "--token" not in container["args"]


def test_no_db_agent_unless_replicas_are_asked_for() -> None:
    assert db_children(cluster(), "img", ca_pin=PIN) == []
    assert db_children(cluster({}), "img", ca_pin=PIN) == []
    assert with_defaults("Cluster", {"db": {}})["db"] == {"replicas": 0}
    image = by_kind(db_children(cluster({"replicas": 1, "image": "db:2"}), "img",
                                ca_pin=PIN))["Deployment", "main-db"]
    assert image["spec"]["template"]["spec"]["containers"][0]["image"] == "db:2"


def test_the_agents_limen_yaml_selects_the_db_resources(tmp_path: Path) -> None:
    path = tmp_path / "limen.yaml"
    for db, expected in (({"replicas": 1}, [{"labels": {"*": "*"}}]),
                         ({"replicas": 1, "resources": SELECTORS}, SELECTORS),
                         ({"replicas": 1, "resources": []}, [])):
        path.write_text(yaml.safe_dump(db_agent_config(cluster(db))))
        settings = load_settings(path, env={}, overrides={"roles": ["db"]})
        assert list(settings.db.resources) == expected
        assert settings.db.databases == ()


def test_a_selector_change_rolls_the_agents_only() -> None:
    def template_hashes(db: dict[str, Any]) -> tuple[str, str]:
        objects = by_kind([*children(cluster(db), "img", 0, ca_pin=PIN),
                           *db_children(cluster(db), "img", ca_pin=PIN)])
        proxy, agents = (str(objects["Deployment", name]["spec"]["template"]["metadata"][
            "annotations"]["limen.dev/config-hash"]) for name in ("main-proxy", "main-db"))
        return proxy, agents

    proxy, agents = template_hashes({"replicas": 1})
    proxy2, agents2 = template_hashes({"replicas": 1, "resources": SELECTORS})
    assert proxy2 == proxy
    assert agents2 != agents


def test_the_proxy_exposes_the_database_fronts(tmp_path: Path) -> None:
    objects = by_kind(children(cluster(), "img", 0, ca_pin=PIN))
    [container] = objects["Deployment", "main-proxy"]["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (ports["postgres"], ports["mysql"]) == (5433, 3036)
    service = {p["name"]: p for p in objects["Service", "main-proxy"]["spec"]["ports"]}
    for name, port in (("postgres", 5433), ("mysql", 3036)):
        assert service[name] == {"name": name, "port": port, "targetPort": name,
                                 "protocol": "TCP"}
    # the proxy listens on every interface of its pod for them (limen.yaml, as loaded)
    (tmp_path / "limen.yaml").write_text(yaml.safe_dump(limen_config(cluster())))
    settings = load_settings(tmp_path / "limen.yaml", env={})
    assert (settings.listeners.postgres, settings.listeners.mysql) == (
        "0.0.0.0:5433", "0.0.0.0:3036")


def test_auth_reads_the_db_token_and_certifies_the_proxy_service(tmp_path: Path) -> None:
    objects = by_kind(children(cluster(), "img", 0, ca_pin=PIN))
    (tmp_path / "limen.yaml").write_text(objects["ConfigMap", "main-config"]["data"][
        "limen.yaml"])
    settings = load_settings(tmp_path / "limen.yaml", env={})
    assert settings.auth.db_token_file == DB_TOKEN_FILE
    assert "main-proxy.limen.svc" in settings.auth.proxy_server_names
    auth = objects["Deployment", "main-auth"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in auth["volumes"]}
    mount = next(m for m in auth["containers"][0]["volumeMounts"] if m["name"] == "db-token")
    assert volumes["db-token"]["secret"] == {"secretName": "main-db-token", "defaultMode": 0o400}
    assert f"{mount['mountPath']}/token" == DB_TOKEN_FILE
    assert mount["readOnly"] is True


# -- the reconciler against the API emulator --------------------------------------------------




async def test_the_operator_deploys_db_agents_that_join_with_the_token_auth_reads(
        kube_api: KubeAPI, operator_kube: Reconciling, tmp_path: Path) -> None:
    body = await operator_kube.run(cluster({"replicas": 2, "resources": SELECTORS}))
    assert condition(body, "Ready")["reason"] == "Progressing"
    assert body["status"]["db"] == {"ready": 0, "replicas": 2}

    secret = kube_api.get("secrets", "main-db-token", NS)
    assert secret is not None
    [owner] = secret["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == ("Cluster", "uid-main", True)
    token = base64.b64decode(secret["data"]["token"]).decode()
    proxy_secret = kube_api.get("secrets", "main-proxy-token", NS)
    assert proxy_secret is not None
    assert len(token) >= 32
    assert token != base64.b64decode(proxy_secret["data"]["token"]).decode()

    deployment = kube_api.get("deployments", "main-db", NS)
    assert deployment is not None
    assert deployment["metadata"]["ownerReferences"][0]["uid"] == "uid-main"
    assert deployment["spec"]["replicas"] == 2
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    ca_secret = kube_api.get("secrets", "main-ca", NS)
    assert ca_secret is not None
    args = container["args"]
    assert args[args.index("--roles") + 1] == "db"
    assert args[args.index("--proxy") + 1] == "main-proxy.limen.svc:3080"
    assert args[args.index("--ca-pin") + 1] == tls_ca_pin(ca_secret["data"])
    assert container["env"] == [{"name": "TMPDIR", "value": "/tmp"},
                                {"name": "USER", "value": "limen"},
                                {"name": "LIMEN_TOKEN", "valueFrom": {"secretKeyRef": {
                                    "name": "main-db-token", "key": "token"}}}]

    # the agents' limen.yaml and the flags, read as `limen start` reads them
    config_map = kube_api.get("configmaps", "main-db-config", NS)
    assert config_map is not None
    (tmp_path / "limen.yaml").write_text(config_map["data"]["limen.yaml"])
    settings = load_settings(tmp_path / "limen.yaml", env={"LIMEN_TOKEN": token}, overrides={
        "roles": ["db"], "join": {"proxy": args[args.index("--proxy") + 1],
                                  "ca_pin": args[args.index("--ca-pin") + 1]}})
    assert (settings.roles, settings.join.token) == (("db",), token)
    assert list(settings.db.resources) == SELECTORS
    # the proxy's certificate will carry the name the agents join at
    main_config = kube_api.get("configmaps", "main-config", NS)
    assert main_config is not None
    (tmp_path / "main.yaml").write_text(main_config["data"]["limen.yaml"])
    auth_settings = load_settings(tmp_path / "main.yaml", env={})
    assert settings.join.proxy.rpartition(":")[0] in auth_settings.auth.proxy_server_names

    # Ready once the agents are too
    make_ready(kube_api, "main-auth", 1)
    make_ready(kube_api, "main-proxy", 1)
    body = await operator_kube.run(body)
    assert condition(body, "Ready")["status"] == "False"
    assert "db 0/2 ready" in condition(body, "Ready")["message"]
    make_ready(kube_api, "main-db", 2)
    body = await operator_kube.run(body)
    ready = condition(body, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Available")
    assert "db agents" in ready["message"]
    assert body["status"]["db"] == {"ready": 2, "replicas": 2}

    # replicas 0: scaled down, not deleted; the token stays what the agents know
    body["spec"]["db"]["replicas"] = 0
    body["metadata"]["generation"] = 2
    body = await operator_kube.run(body)
    scaled = kube_api.get("deployments", "main-db", NS)
    assert scaled is not None
    assert scaled["spec"]["replicas"] == 0
    assert "db" not in {k for k, v in body["status"].items() if v is not None}
    again = kube_api.get("secrets", "main-db-token", NS)
    assert again is not None
    assert again["data"] == secret["data"]


async def test_without_spec_db_there_is_no_agent_but_the_token_exists(
        kube_api: KubeAPI, operator_kube: Reconciling) -> None:
    body = await operator_kube.run(cluster())
    assert kube_api.get("deployments", "main-db", NS) is None
    assert kube_api.get("configmaps", "main-db-config", NS) is None
    assert kube_api.get("secrets", "main-db-token", NS) is not None  # auth reads it anyway
    assert "db" not in body["status"]


async def test_a_foreign_db_token_secret_is_left_alone(kube_api: KubeAPI,
                                                       operator_kube: Reconciling) -> None:
    kube_api.create({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": "main-db-token", "namespace": NS},
                     "data": {"token": base64.b64encode(b"x" * 40).decode()}})
    body = await operator_kube.run(cluster({"replicas": 1}))
    owned = condition(body, "Owned")
    assert (owned["status"], owned["reason"]) == ("False", "NotOwned")
    assert "Secret main-db-token" in owned["message"]
    assert kube_api.get("deployments", "main-db", NS) is None


@pytest.mark.parametrize(("db", "problem"), [
    ({"replicas": -1}, "spec.db.replicas"),
    ({"replicas": 1, "resources": [{"labels": {"env": ["dev"]}}]}, "spec.db.resources"),
    ({"replicas": 1, "resources": [{}]}, "spec.db.resources"),
    ({"replicas": 1, "resources": [{"labels": {"env": "^(dev$"}}]}, "spec.db.resources[0]"),
    ({"replicas": 1, "resources": [{"labels": {"*": "dev"}}]}, "spec.db.resources[0]"),
])
async def test_a_bad_db_spec_is_stalled_before_anything_is_deployed(
        kube_api: KubeAPI, operator_kube: Reconciling, db: dict[str, Any],
        problem: str) -> None:
    body = await operator_kube.run(cluster(db))
    valid = condition(body, "Valid")
    assert (valid["status"], valid["reason"]) == ("False", "Invalid")
    assert problem in valid["message"]
    assert condition(body, "Stalled")["status"] == "True"
    assert kube_api.get("deployments", "main-db", NS) is None
    assert kube_api.get("secrets", "main-db-token", NS) is None
