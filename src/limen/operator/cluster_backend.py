"""What a Cluster's ``spec.backend`` means for the pods the operator writes (pure).

::

    spec.backend                                   the auth pods
    (absent) | {type: sqlite}                      SQLite in the auth data PVC: one replica
    {postgres: {dsnSecretRef: {name, key}}}        PostgreSQL: spec.auth.replicas pods,
    {type: postgres, dsn_secret_ref:                 an emptyDir data volume, and in
        {secret, key}}  (the earlier form)           limen.yaml ``backend: {type: postgres,
                                                     dsn_file, ca_key_file}``:
        Secret <dsn name>   key <key> ──mounted──▶ /etc/limen/backend/dsn     (dsn_file)
        Secret <name>-ca-key  key ``key`` ──────▶ /etc/limen/ca-key/key       (ca_key_file)
                            32 random bytes, base64; created once by the operator, never
                            rewritten: it encrypts the CA private keys in the database

Both Secrets are mounted 0400; with the pods' ``fsGroup`` the kubelet makes them 0440, root's
with the pod's group, which ``limen.auth.ca_key_file`` accepts for that reason only. A DSN given
as ``{file}`` or ``{env}`` cannot be mounted by the operator: :func:`backend_problem` says so,
as it refuses more than one auth replica on SQLite. Called by ``limen.operator.cluster_builders``
(volumes, mounts, limen.yaml) and ``limen.operator.cluster`` (validity, the key Secret).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from limen.auth.ca_sealing import CA_KEY_BYTES

__all__ = [
    "CA_KEY_DIR",
    "CA_KEY_FILE",
    "CA_KEY_SECRET_KEY",
    "DSN_DIR",
    "DSN_FILE",
    "SQLITE_SINGLE_AUTH",
    "PostgresRef",
    "auth_replicas",
    "backend_config",
    "backend_mounts",
    "backend_problem",
    "backend_volumes",
    "ca_key_data",
    "new_ca_key",
    "postgres_ref",
]

DSN_DIR = "/etc/limen/backend"
DSN_FILE = f"{DSN_DIR}/dsn"
"""Where the auth pods read the connection string (``backend.dsn_file``)."""
CA_KEY_DIR = "/etc/limen/ca-key"
CA_KEY_SECRET_KEY = "key"
"""The key of the CA key in the ``<name>-ca-key`` Secret."""
CA_KEY_FILE = f"{CA_KEY_DIR}/{CA_KEY_SECRET_KEY}"
"""Where the auth pods read the CA key (``backend.ca_key_file``)."""
SQLITE_SINGLE_AUTH = ("auth.replicas > 1 needs spec.backend.postgres: SQLite is a "
                      "single-process store")


@dataclass(frozen=True)
class PostgresRef:
    """The Secret (in the Cluster's namespace) and key holding the PostgreSQL DSN."""

    secret: str
    key: str


def postgres_ref(spec: Mapping[str, Any]) -> PostgresRef | None:
    """The DSN Secret of a (validated) spec's PostgreSQL backend; None for SQLite or a DSN
    the operator cannot mount (see :func:`backend_problem`)."""
    backend = spec.get("backend") or {}
    given = (backend.get("postgres") or {}).get("dsnSecretRef")
    if given:
        return PostgresRef(str(given["name"]), str(given["key"]))
    earlier = backend.get("dsn_secret_ref") or {}
    if backend.get("type") == "postgres" and earlier.get("secret"):
        return PostgresRef(str(earlier["secret"]), str(earlier["key"]))
    return None


def _wants_postgres(spec: Mapping[str, Any]) -> bool:
    backend = spec.get("backend") or {}
    return "postgres" in backend or backend.get("type") == "postgres"


def auth_replicas(spec: Mapping[str, Any]) -> int:
    """``spec.auth.replicas`` (1 when absent)."""
    return int((spec.get("auth") or {}).get("replicas", 1))


def backend_problem(spec: Mapping[str, Any]) -> str | None:
    """Why the operator cannot deploy this (schema-valid) spec's backend, or None."""
    if _wants_postgres(spec) and postgres_ref(spec) is None:
        return ("spec.backend.dsn_secret_ref: the operator mounts the connection string from "
                "a Kubernetes Secret: give spec.backend.postgres.dsnSecretRef {name, key}")
    if not _wants_postgres(spec) and auth_replicas(spec) > 1:
        return f"spec.auth.replicas: {SQLITE_SINGLE_AUTH}"
    return None


def backend_config() -> dict[str, Any]:
    """The ``backend`` section of auth's limen.yaml for PostgreSQL."""
    return {"type": "postgres", "dsn_file": DSN_FILE, "ca_key_file": CA_KEY_FILE}


def backend_volumes(ref: PostgresRef, ca_key_secret: str) -> list[dict[str, Any]]:
    """The DSN and CA key Secrets as volumes (the DSN Secret's one key, as ``dsn``)."""
    return [
        {"name": "backend-dsn", "secret": {"secretName": ref.secret, "defaultMode": 0o400,
                                           "items": [{"key": ref.key, "path": "dsn"}]}},
        {"name": "ca-key", "secret": {"secretName": ca_key_secret, "defaultMode": 0o400}},
    ]


def backend_mounts() -> list[dict[str, Any]]:
    """Where auth and its seed-ca init container see :func:`backend_volumes`."""
    return [{"name": "backend-dsn", "mountPath": DSN_DIR, "readOnly": True},
            {"name": "ca-key", "mountPath": CA_KEY_DIR, "readOnly": True}]


def new_ca_key() -> str:
    """A fresh CA key as ``backend.ca_key_file`` holds it: 32 random bytes, base64."""
    return base64.b64encode(secrets.token_bytes(CA_KEY_BYTES)).decode() + "\n"


def ca_key_data(key_text: str) -> dict[str, str]:
    """The ``data`` of the ``<name>-ca-key`` Secret holding ``key_text``."""
    return {CA_KEY_SECRET_KEY: base64.b64encode(key_text.encode()).decode()}
