"""Assembles and runs the operator: context, explicit kopf registry, kopf settings; plus the
two helper jobs of an operator-managed deployment (seeding auth's CAs, issuing the operator's
identity).

::

    limen operator [--namespace NS ... | --all-namespaces] [--standalone] [--liveness URL]
                   [--diag-addr HOST:PORT]   /metrics (reconciles), /healthz, /readyz
      └─ run() ──▶ build_context(config) ──▶ build_registry(ctx) ──▶ kopf.operator(...)
                       auth: LimenAuth              startup: configure_kopf, KubeApi
                       (fixed address, or a         login: kubeconfig / service account,
                        local --data-dir)             kopf's session (kopf_session: its
                                                      connections ended when kopf returns)
                                                    User/Role/TrustedCluster/Resource,
                                                    Cluster handlers
                                                    cleanup: timers, then auth and kube
    kopf run -m limen.operator   (the same registry, built from LIMEN_OPERATOR_* variables)
    limen operator seed-ca       auth pod's init container: CA Secret ──▶ auth's backend (the
                                 one limen.yaml configures: SQLite in the data directory, or
                                 PostgreSQL with the records encrypted by backend.ca_key_file)
    limen operator identity      an admin identity for the operator, from a data dir's TLS CA

Called by ``limen.cli.limen_operator``, by ``limen.operator`` (kopf run) and the tests, which
run the operator in-process with their own context.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Collection
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import kopf

from limen.auth.authorities import read_ca
from limen.auth.ca_key_file import ca_sealer_for, sealer_from_file
from limen.auth.ca_sealing import CASealer
from limen.auth.store_keys import CLUSTER_NAME_KEY
from limen.backend.factory import open_backend
from limen.backend.postgres_dsn import backend_options
from limen.backend.sqlite import DB_FILENAME
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.ca.host_credentials import HostCredentials
from limen.config import load_settings
from limen.diag import Check, DiagListener, Readiness
from limen.errors import BadParameter, NotFound
from limen.files import private_dir
from limen.operator.auth import LimenAuth, data_dir_endpoint, static_endpoint
from limen.operator.ca_secret import operator_identity, read_secret_data, seed_backend
from limen.operator.cluster import register_cluster_handlers
from limen.operator.context import OperatorContext
from limen.operator.kube import KubeApi
from limen.operator.kube import login as kube_login
from limen.operator.resource_handlers import register_resource_handlers
from limen.operator.settings import OperatorConfig, configure_kopf

__all__ = [
    "build_context",
    "build_registry",
    "run",
    "seed_ca_from_dir",
    "write_operator_identity",
]

CONNECTION_GRACE_SECONDS = 5.0
"""At exit, the longest wait for kopf's aborted connections to be closed."""
TIMER_GRACE_SECONDS = 2.0
"""At cleanup, how long the timers get to write their last status once their reconciles are
abandoned (one status patch) before they are cancelled."""


def build_context(config: OperatorConfig) -> OperatorContext:
    """The operator's shared state; the auth client connects lazily, on the first call."""
    auth: LimenAuth | None = None
    if config.auth_address:
        identity = config.identity_path
        if identity is None:
            raise BadParameter("--auth needs --identity (the operator's identity directory)")
        auth = LimenAuth(static_endpoint(config.auth_address, identity),
                         call_timeout=config.call_timeout_seconds)
    elif config.data_dir is not None:
        auth = LimenAuth(data_dir_endpoint(config.data_dir, config.identity_dir),
                         call_timeout=config.call_timeout_seconds)
    return OperatorContext(config=config, auth=auth)


def build_registry(ctx: OperatorContext) -> kopf.OperatorRegistry:
    """A fresh kopf registry holding every Limen handler, bound to ``ctx``."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_kopf(settings, ctx.config)
        if ctx.kube is None:
            ctx.kube = await KubeApi.connect()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        # the timers first: one finishing later would patch through a session nobody closes
        await ctx.stop_timers(TIMER_GRACE_SECONDS)
        if ctx.auth is not None:
            await ctx.auth.shutdown()
        if ctx.kube is not None:
            await ctx.kube.close()
            ctx.kube = None

    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        info = await asyncio.to_thread(kube_login, **kwargs)
        return None if info is None else ctx.sessions.session(info)

    register_resource_handlers(registry, ctx)
    register_cluster_handlers(registry, ctx)
    return registry


async def run(config: OperatorConfig, *, namespaces: Collection[str] = (),
              standalone: bool = False, liveness: str | None = None,
              ctx: OperatorContext | None = None,
              stop_flag: asyncio.Event | None = None,
              ready_flag: asyncio.Event | None = None, diag_addr: str = "") -> None:
    """Run the operator until stopped: in ``namespaces``, or cluster-wide when none;
    ``diag_addr``: the diagnostics listener (``limen.diag``: its reconciles in /metrics,
    /readyz once the Kubernetes API client is up)."""
    ctx = ctx or build_context(config)
    settings = kopf.OperatorSettings()
    configure_kopf(settings, config)
    diag = DiagListener(diag_addr, ctx.metrics, Readiness([Check("kube-api", partial(
        _kube_ready, ctx))])) if diag_addr else None
    try:
        if diag is not None:
            await diag.start()
        await kopf.operator(
            registry=build_registry(ctx), settings=settings, clusterwide=not namespaces,
            namespaces=list(namespaces), standalone=standalone or None,
            liveness_endpoint=liveness, stop_flag=stop_flag, ready_flag=ready_flag)
    finally:
        if diag is not None:
            await diag.stop()
        # kopf closed its sessions; end the connections whose TLS shutdown is still running
        await ctx.sessions.finish(CONNECTION_GRACE_SECONDS)


async def _kube_ready(ctx: OperatorContext) -> str | None:
    return None if ctx.kube is not None else "no Kubernetes API client yet (starting up)"


# -- helper jobs -------------------------------------------------------------------------------


def read_ca_dir(ca_dir: Path) -> dict[str, str]:
    """A mounted CA Secret (one file per key, decoded) as the Secret's base64 ``data``."""
    data: dict[str, str] = {}
    for path in sorted(ca_dir.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            data[path.name] = base64.b64encode(path.read_bytes()).decode()
    return data


def seed_ca_from_dir(ca_dir: Path, data_dir: Path, config: Path | None = None) -> list[str]:
    """``limen operator seed-ca``: make auth's backend hold the CAs of the mounted CA Secret;
    returns the CA types written (empty when already in place). The backend is the one
    ``config`` (auth's limen.yaml) sets, with its ``ca_key_file``; without it, SQLite in
    ``data_dir``."""
    cluster, cas = read_secret_data(read_ca_dir(ca_dir))
    private_dir(data_dir)  # in the auth pod: a directory of its own inside the data volume
    options: dict[str, Any] = {}
    sealer: CASealer | None = None
    if config is not None:
        settings = load_settings(config)
        options = backend_options(settings.backend)
        sealer = ca_sealer_for(settings.backend)

    async def seed() -> list[str]:
        backend = open_backend(data_dir, **options)
        try:
            return await seed_backend(backend, cluster, cas, sealer)
        finally:
            await backend.close()

    return asyncio.run(seed())


def write_operator_identity(data_dir: Path, out: Path, ttl: timedelta,
                            ca_key_file: Path | None = None) -> HostCredentials:
    """``limen operator identity``: an admin identity for the operator, signed by the TLS CA in
    ``data_dir`` (the cluster may be running), saved as an identity directory in ``out``.
    ``ca_key_file``: the cluster's ``backend.ca_key_file``, when its CA records are encrypted."""
    if not (data_dir / DB_FILENAME).exists():
        raise NotFound(f"{data_dir} holds no Limen cluster (no {DB_FILENAME})")
    sealer = sealer_from_file(ca_key_file) if ca_key_file else None
    credentials = operator_identity(asyncio.run(_tls_ca(data_dir, sealer)), ttl)
    credentials.save(out)
    return credentials


async def _tls_ca(data_dir: Path, sealer: CASealer | None) -> CertAuthority:
    backend = open_backend(data_dir)
    try:
        name = await backend.get(CLUSTER_NAME_KEY)
        if name is None:
            raise NotFound(f"{data_dir} holds no Limen cluster yet (start it once)")
        cluster = name.value.decode()
        ca = await read_ca(backend, cluster, CertAuthorityType.TLS, sealer)
        if ca is None:
            raise NotFound(f"{data_dir} holds no TLS CA for cluster {cluster}")
        return ca
    finally:
        await backend.close()
