"""What the tests of a trusted leaf cluster share: the trust token the root issues for the leaf
(:func:`join_leaf`), the leaf's TrustedCluster (:func:`trusted_cluster`: root ``ops`` → leaf
``leaf-dev``, root ``guest`` → leaf ``visitor``), a root user with their own HOME, pg service
file and kubeconfig (:class:`Person`, :func:`ready_person`) and a database certificate routed to
the leaf (:func:`routed_login`). Used by test_trust_e2e, test_leaf_db_kube, test_leaf_db_apart,
test_leaf_kube_apart and test_locks_leaf.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from limen.client.db_access import listener_address
from limen.client.db_profiles import (
    POSTGRES,
    DbTarget,
    service_name,
    write_db_config,
    write_db_credentials,
)
from limen.client.profile import ProfileStore
from limen.client.webapi import WebApi

from .cluster import ClusterFactory, LimenCluster, LimenUser, command, run

__all__ = ["ROOT_ROLES", "Person", "join_leaf", "ready_person", "routed_login",
           "start_agent_apart", "trust_root_ops_only", "trusted_cluster"]

ROOT_ROLES = """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: ops}
spec:
  allow: {cluster_labels: {'*': '*'}}
---
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: stranger}
spec:
  allow: {cluster_labels: {'*': '*'}}
"""
"""The root's roles of the agents-apart tests: ``ops`` (mapped to the leaf's ``leaf-dev`` by
:func:`trusted_cluster`) and ``stranger`` (mapped to nothing)."""


def join_leaf(root: LimenCluster, leaf: LimenCluster) -> tuple[Path, str]:
    """A trusted_cluster token from the root, saved for the leaf (0600, never in Git) in its
    secrets directory (DATA_DIR/secrets), where the TrustedCluster names it."""
    issued = root.lmctl_json("tokens", "add", "--type", "trusted_cluster", "--ttl", "1h")
    token_file = leaf.data_dir / "secrets" / "root.token"
    token_file.write_text(issued["token"] + "\n")
    token_file.chmod(0o600)
    return token_file, str(issued["ca_pin"])


def trusted_cluster(root: LimenCluster, token_file: Path, ca_pin: str) -> str:
    return f"""
apiVersion: limen.dev/v1alpha1
kind: TrustedCluster
metadata: {{name: root}}
spec:
  enabled: true
  proxy_address: {root.web}
  ca_pin: {ca_pin}
  token_secret_ref: {{file: {token_file.name}}}
  role_map:
    - {{remote: ops, local: [leaf-dev]}}
    - {{remote: guest, local: [visitor]}}
"""


@dataclass
class Person:
    user: LimenUser

    @property
    def env(self) -> dict[str, str]:
        return {**self.user.env, "HOME": str(self.user.home),
                "PGSERVICEFILE": str(self.user.home / ".pg_service.conf"),
                "KUBECONFIG": str(self.user.home / "kubeconfig")}

    def lmsh(self, *args: str, check: bool = True) -> Any:
        return run([command("lmsh"), *args], env=self.env, check=check)

    def ls(self, what: str) -> list[dict[str, Any]]:
        answer = json.loads(self.lmsh(what, "ls", "--cluster", "leaf", "-o", "json").stdout)
        return list(answer["items"])

    def psql(self, service: str, sql: str, check: bool = True) -> Any:
        return run(["psql", "-X", "-v", "ON_ERROR_STOP=1", f"service={service}", "-At",
                    "-c", sql], env=self.env, check=check)

    def kubectl(self, *args: str, check: bool = True) -> Any:
        return run(["kubectl", "--request-timeout=20s", *args], env=self.env, check=check)


def ready_person(cluster: LimenCluster, name: str, role: str) -> Person:
    user = cluster.signed_up_user(name, roles=[role])
    user.login()
    return Person(user)


def routed_login(person: Person, service: str, db_user: str) -> str:
    """A database certificate routed to the leaf, asked of the person's (root) auth through
    the web API as ``lmsh db login --cluster leaf`` does, but without the leaf's listing (a
    person the leaf lists nothing for still gets one: the root cannot decide for the leaf),
    and the pg_service section for it; returns the section's name."""
    store = ProfileStore(person.user.home)
    profile = store.current_valid()

    async def fetch() -> tuple[str, dict[str, Any]]:
        api = WebApi.for_profile(store, profile)
        try:
            answer = await api.as_user_post("db/certs", {
                "service": service, "db_user": db_user, "db_name": "app", "cluster": "leaf"})
            return str(answer["cert"]), await api.ping()
        finally:
            await api.close()

    pem, ping = asyncio.run(fetch())
    files = write_db_credentials(store, profile, service, pem.encode(), "leaf")
    host, port = listener_address(ping, POSTGRES, profile.proxy)
    write_db_config(DbTarget("leaf", service, POSTGRES, host, port, db_user, "app"), files,
                    person.env)
    return service_name("leaf", service)


def trust_root_ops_only(root: LimenCluster, leaf: LimenCluster) -> None:
    """The leaf trusts the root with :func:`trusted_cluster`'s role_map but for ``guest``:
    root ``ops`` maps to ``leaf-dev``, any other root role (``stranger``) to nothing."""
    token_file, ca_pin = join_leaf(root, leaf)
    leaf.lmctl("apply", "-f", "-", input=trusted_cluster(root, token_file, ca_pin).replace(
        "- {remote: guest, local: [visitor]}", ""))


def start_agent_apart(clusters: ClusterFactory, base: Path, leaf: LimenCluster, role: str,
                      config: str) -> LimenCluster:
    """A ``limen start --roles ROLE`` agent of the leaf in its own process, joined through the
    leaf's proxy with a fresh token, configured with ``config`` (YAML); stopped with
    ``clusters``."""
    issued = leaf.lmctl_json("tokens", "add", "--type", role, "--ttl", "5m")
    path = base / "agent.yaml"
    path.write_text(config)
    agent = LimenCluster(base / "agent", "leaf", [
        "--roles", role, "-c", str(path), "--proxy", leaf.web,
        "--token", issued["token"], "--ca-pin", issued["ca_pin"]])
    clusters.clusters.append(agent)
    agent.start()
    return agent
