"""kopf handlers for Cluster: deploy a Limen cluster in Kubernetes and report its readiness.

::

    create / update / resume / timer ──▶ ClusterReconciler.reconcile
        validate (CRD schema; a DSN the operator cannot mount; auth.replicas > 1 on SQLite)
                   ──invalid──▶ Valid=False, Stalled=True, nothing deployed
        CA Secret: create once (ca_secret.generate_cas); never overwritten, except by a
                   requested rotation (spec.ca_rotation.nonce), finished after grace_period
        proxy, db and kube token Secrets: create once (random tokens), never overwritten
        PostgreSQL: the CA key Secret (cluster_backend), created once, never overwritten
        children (cluster_builders, db_agent when spec.db.replicas > 0, with the TLS CA's
                   pin for the proxies and db agents): create, or merge-patch what differs;
                   an existing object the Cluster does not own (the Secrets included) is
                   left alone ──▶ Owned=False, Stalled=True; spec.db.replicas 0: a db
                   agent Deployment created before is scaled to 0
        kube agent (kube_agent, spec.kube.enabled): its namespaced children as above, and
                   the cluster-scoped ClusterRole/ClusterRoleBinding (impersonate only),
                   owned by their labels (no owner reference across scopes); disabled: the
                   Deployment scaled to 0 and the ClusterRole/Binding deleted
        spec.rotation (phased, applied by auth): forwarded to the cluster's auth as its
                Cluster document (rotation_forward), status.rotation / caPhases and the
                condition RotationRequest read back; the rotation timer polls while pending
        status: observedGeneration, conditions, publicAddress, auth/proxy(/db) ready counts,
                caRotation; Ready once the Deployments have their replicas ready (and, on
                PostgreSQL, the DSN Secret exists with its key: else WaitingForSecret)
        deployed: recorded in the context (deployed_auth): with no auth address configured,
                the Limen kinds go to this Cluster's auth, <name>-auth.<ns>.svc:3025
    delete ──▶ forgotten there (optional handler: no finalizer of its own); with
        spec.kube.enabled the kube agent's ClusterRole/ClusterRoleBinding are deleted (the
        garbage collector cannot: they are cluster-scoped); kopf's finalizer, which the
        resync timer asks for anyway, holds the Cluster until that handler ran
    Deployment event (app.kubernetes.io/managed-by=limen-operator) ──▶ refresh the owner's
        readiness in its status

Deleting the Cluster deletes its namespaced children through their ownerReferences
(Kubernetes' garbage collector); the operator needs no finalizer logic for them. Kubernetes
calls go through ``limen.operator.kube`` (threads). Called by ``limen.operator.main``
(registration).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import kopf

from limen.api.loader import SourceDocument
from limen.api.resources import API_GROUP, API_VERSION, Kind
from limen.api.validation import parse_duration, validate
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.errors import BadParameter, ValidationFailed
from limen.operator.ca_secret import (
    finish_rotation,
    generate_cas,
    read_secret_data,
    rotate,
    rotation_types,
    secret_data,
    tls_ca_pin,
)
from limen.operator.cluster_backend import backend_problem, ca_key_data, new_ca_key, postgres_ref
from limen.operator.cluster_builders import (
    ClusterNames,
    auth_address,
    children,
    cluster_name,
    cluster_spec,
    common_labels,
    is_owned_by,
    new_proxy_token,
    owner_reference,
    proxy_token_secret,
    readiness,
)
from limen.operator.conditions import Check, Observation, build_status, status_changes
from limen.operator.context import OperatorContext
from limen.operator.db_agent import (
    db_children,
    db_replicas,
    db_selector_problem,
    db_token_secret,
)
from limen.operator.deployed_auth import DeployedCluster
from limen.operator.kube import KubeApi, KubeError
from limen.operator.kube_agent import (
    kube_children,
    kube_enabled,
    kube_problem,
    kube_rbac,
    kube_rbac_name,
    kube_token_secret,
    owns_cluster_scoped,
)
from limen.operator.rotation_document import pending
from limen.operator.rotation_forward import (
    RotationForwarder,
    poll_seconds,
    with_rotation_condition,
)
from limen.operator.settings import OPERATOR_ID_LABEL, REPORTING_COMPONENT

__all__ = ["ROTATION_ANNOTATION", "ClusterReconciler", "register_cluster_handlers"]

ROTATION_ANNOTATION = f"{API_GROUP}/ca-rotation"
"""On the CA Secret: the state of the last rotation (JSON), written with the rotated keys."""
DEFAULT_GRACE = timedelta(hours=30)
Logger = logging.Logger | logging.LoggerAdapter[Any]
_VERSION = "v1alpha1"
_VALID = Check(True, "Valid", "")
_PART_NAMES = {"auth": "auth", "proxy": "proxy", "db": "db agents", "kube": "the kube agent"}


def register_cluster_handlers(registry: kopf.OperatorRegistry, ctx: OperatorContext) -> None:
    labels = {OPERATOR_ID_LABEL: ctx.config.operator_id or kopf.ABSENT}
    reconciler = ClusterReconciler(ctx)

    @kopf.on.resume(API_GROUP, _VERSION, "clusters", id="deploy", labels=labels,
                    registry=registry)
    @kopf.on.create(API_GROUP, _VERSION, "clusters", id="deploy", labels=labels,
                    registry=registry)
    @kopf.on.update(API_GROUP, _VERSION, "clusters", id="deploy", labels=labels,
                    registry=registry)
    async def deploy(body: kopf.Body, patch: kopf.Patch, logger: Logger, **_: Any) -> None:
        await reconciler.reconcile(body, patch, logger, retry=True)

    @kopf.timer(API_GROUP, _VERSION, "clusters", id="refresh", labels=labels,
                interval=ctx.config.resync_seconds, initial_delay=ctx.config.resync_seconds,
                registry=registry)
    async def refresh(body: kopf.Body, patch: kopf.Patch, logger: Logger,
                      **kwargs: Any) -> None:
        await ctx.run_timer(reconciler.reconcile(body, patch, logger, retry=False),
                            kwargs["stopped"])

    @kopf.on.delete(API_GROUP, _VERSION, "clusters", id="forget", labels=labels,
                    optional=True, registry=registry)  # no finalizer: children go by owner
    async def forget(body: kopf.Body, **_: Any) -> None:
        ctx.deployed.forget(str(body["metadata"].get("uid") or ""))
        await reconciler.rotations.forget(str(body["metadata"].get("uid") or ""))

    @kopf.timer(API_GROUP, _VERSION, "clusters", id="rotation", labels=labels,
                interval=poll_seconds(ctx.config.resync_seconds),
                initial_delay=poll_seconds(ctx.config.resync_seconds),
                when=lambda body, **_: pending(body), registry=registry)
    async def rotation(body: kopf.Body, patch: kopf.Patch, logger: Logger,
                       **kwargs: Any) -> None:  # a spec.rotation request auth has not settled
        await ctx.run_timer(reconciler.reconcile(body, patch, logger, retry=False),
                            kwargs["stopped"])

    @kopf.on.cleanup(registry=registry)
    async def close_rotation_clients(**_: Any) -> None:
        await reconciler.rotations.shutdown()

    @kopf.on.delete(API_GROUP, _VERSION, "clusters", id="kube_agent_rbac", labels=labels,
                    when=lambda body, **_: kube_enabled(body), registry=registry)
    async def kube_agent_rbac(body: kopf.Body, logger: Logger, **_: Any) -> None:
        await reconciler.delete_kube_rbac(body, logger)

    @kopf.on.event("apps", "v1", "deployments", id="deployment_changed",
                   labels={"app.kubernetes.io/managed-by": REPORTING_COMPONENT},
                   registry=registry)
    async def deployment_changed(body: kopf.Body, logger: Logger, **_: Any) -> None:
        await reconciler.deployment_changed(body, logger)


class ClusterReconciler:
    def __init__(self, ctx: OperatorContext) -> None:
        self.ctx = ctx
        self.rotations = RotationForwarder(ctx)

    @property
    def kube(self) -> KubeApi:
        if self.ctx.kube is None:
            raise kopf.TemporaryError("the Kubernetes API client is not ready", delay=1)
        return self.ctx.kube

    async def reconcile(self, body: Mapping[str, Any], patch: Any, logger: Logger, *,
                        retry: bool) -> None:
        uid = str(body["metadata"].get("uid") or "")
        async with self.ctx.lock(uid), self.ctx.reconciling("Cluster"):
            self.ctx.reconciles[uid] += 1
            problem = _problem(body)
            if problem is not None:
                invalid = Check(False, "Invalid", problem)
                self._write(body, patch, Observation(invalid, invalid, Check(None, "NotChecked"),
                                                     stalled=True))
                return
            try:
                observation, extra, rotation = await self._deploy(body, logger)
            except (KubeError, BadParameter) as err:
                failed = Check(False, "KubernetesError" if isinstance(err, KubeError)
                               else "CASecretDamaged", str(err))
                stalled = isinstance(err, BadParameter)
                self._write(body, patch, Observation(
                    failed, _VALID, Check(None, "NotChecked"), reconciling=not stalled,
                    stalled=stalled))
                if retry and not stalled:
                    raise kopf.TemporaryError(str(err),
                                              delay=self.ctx.config.retry_seconds) from None
                return
            self._write(body, patch, observation, extra, rotation)

    async def _deploy(self, body: Mapping[str, Any], logger: Logger
                      ) -> tuple[Observation, dict[str, Any], Check | None]:
        names = ClusterNames(body["metadata"]["name"])
        ca = await self._ca_secret(body, logger)
        token_owned = await self._token_secret(body, names.proxy_token, proxy_token_secret,
                                               logger)
        db_token_owned = await self._token_secret(body, names.db_token, db_token_secret, logger)
        kube_token_owned = await self._token_secret(body, names.kube_token, kube_token_secret,
                                                    logger)
        ca_key_owned = await self._ca_key_secret(body, logger)
        foreign = [f"Secret {name}" for name, owned in ((names.ca_secret, ca is not None),
                                                         (names.proxy_token, token_owned),
                                                         (names.db_token, db_token_owned),
                                                         (names.kube_token, kube_token_owned),
                                                         (names.ca_key, ca_key_owned))
                   if not owned]
        if ca is not None and not foreign:
            pin, rotation, tls_ca = ca
            revision = int(rotation.get("revision", 0))
            image = self.ctx.config.image
            for child in [*children(body, image, revision, ca_pin=pin),
                          *db_children(body, image, ca_pin=pin),
                          *kube_children(body, image, ca_pin=pin)]:
                if not await self._apply_child(body, child):
                    foreign.append(f"{child['kind']} {child['metadata']['name']}")
            if db_replicas(body) == 0:
                await self._scale_to_zero(body, names.db)
            foreign += await self._kube_rbac(body, logger)
            if not kube_enabled(body):
                await self._scale_to_zero(body, names.kube)
            if not foreign:
                meta = body["metadata"]
                self.ctx.cluster_deployed(str(meta.get("uid") or ""), DeployedCluster(
                    f"{meta['namespace']}/{meta['name']}", auth_address(body), tls_ca))
        if foreign or ca is None:
            verb = "exists and is" if len(foreign) == 1 else "exist and are"
            conflict = Check(False, "NotOwned", f"{', '.join(foreign)} {verb} not owned by "
                                                "this Cluster; delete or rename them")
            return Observation(conflict, _VALID, conflict, stalled=True), {}, None
        observation, extra = await self._observe(body)
        extra["caSecret"] = names.ca_secret
        if rotation:
            extra["caRotation"] = rotation
        forwarded = await self.rotations.forward(body)  # spec.rotation, to auth
        return observation, {**extra, **forwarded.fields}, forwarded.check

    async def _create_once(self, body: Mapping[str, Any], kind: str, name: str,
                           make: Callable[[], dict[str, Any]],
                           logger: Logger) -> dict[str, Any] | None:
        """The object ``kind/name``, created from ``make()`` when missing (never rewritten);
        None when it exists and this Cluster does not own it."""
        namespace = body["metadata"]["namespace"]
        current = await self.kube.get(kind, namespace, name)
        if current is None:
            try:
                current = await self.kube.create(make())
                logger.info("created the %s %s", kind, name)
            except KubeError as err:
                if err.status != 409:
                    raise
                current = await self.kube.get(kind, namespace, name)
                if current is None:
                    raise
        return current if is_owned_by(current, body) else None

    # -- the Secrets -------------------------------------------------------------------------
    async def _ca_secret(self, body: Mapping[str, Any], logger: Logger
                         ) -> tuple[str, dict[str, Any], CertAuthority] | None:
        """Create the CA Secret once; carry out a requested rotation. Returns the TLS CA's pin,
        the rotation state and the TLS CA (None when a Secret of that name belongs to someone
        else)."""
        def make() -> dict[str, Any]:
            cas = generate_cas(cluster_name(body), now=self.ctx.clock())
            return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": name, "namespace": body["metadata"]["namespace"],
                                 "labels": common_labels(body, "ca"),
                                 "ownerReferences": [owner_reference(body)]},
                    "data": secret_data(cluster_name(body), cas)}

        name = ClusterNames(body["metadata"]["name"]).ca_secret
        secret = await self._create_once(body, "Secret", name, make, logger)
        if secret is None:
            return None
        rotation, data = await self._rotation(body, secret, logger)
        return tls_ca_pin(data), rotation, read_secret_data(data)[1][CertAuthorityType.TLS]

    async def _token_secret(self, body: Mapping[str, Any], name: str,
                            make: Callable[[Mapping[str, Any], str], dict[str, Any]],
                            logger: Logger) -> bool:
        """Create a token Secret once (``make(body, <a random token>)``); False when a Secret
        of that name belongs to someone else."""
        secret = await self._create_once(
            body, "Secret", name, lambda: make(body, new_proxy_token()), logger)
        return secret is not None

    async def _ca_key_secret(self, body: Mapping[str, Any], logger: Logger) -> bool:
        """PostgreSQL: create the CA key Secret once (32 random bytes; never rewritten: the
        CA records in the database are encrypted with it). False when a Secret of that name
        belongs to someone else; True (nothing to do) with SQLite."""
        if postgres_ref(cluster_spec(body)) is None:
            return True
        name = ClusterNames(body["metadata"]["name"]).ca_key

        def make() -> dict[str, Any]:
            return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": name, "namespace": body["metadata"]["namespace"],
                                 "labels": common_labels(body, "ca"),
                                 "ownerReferences": [owner_reference(body)]},
                    "data": ca_key_data(new_ca_key())}

        return await self._create_once(body, "Secret", name, make, logger) is not None

    async def _rotation(self, body: Mapping[str, Any], secret: Mapping[str, Any],
                        logger: Logger) -> tuple[dict[str, Any], dict[str, str]]:
        """The rotation state and the Secret's data, after the step a rotation asks for."""
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        state: dict[str, Any] = json.loads(annotations.get(ROTATION_ANNOTATION, "{}"))
        data: dict[str, str] = dict(secret.get("data") or {})
        request = cluster_spec(body).get("ca_rotation") or {}
        now = self.ctx.clock()
        if request and request.get("nonce") != state.get("nonce"):
            grace = (parse_duration(request["grace_period"]) if request.get("grace_period")
                     else DEFAULT_GRACE)
            new_state = {"nonce": request["nonce"], "type": request["type"], "phase": "Rotating",
                         "started": _iso(now), "finishAfter": _iso(now + grace),
                         "revision": int(state.get("revision", 0)) + 1}
            change = rotate
        elif state.get("phase") == "Rotating" and now >= datetime.fromisoformat(
                state["finishAfter"]):
            new_state = {**state, "phase": "Completed", "finished": _iso(now),
                         "revision": int(state.get("revision", 0)) + 1}
            change = _finish
        else:
            return state, data
        cluster, cas = read_secret_data(data)
        types = rotation_types(str(new_state["type"]))
        data = secret_data(cluster, change(cas, types, now=now))
        meta = secret["metadata"]
        await self.kube.merge_patch("Secret", meta["namespace"], meta["name"], {
            "metadata": {"resourceVersion": meta.get("resourceVersion"),
                         "annotations": {ROTATION_ANNOTATION: json.dumps(new_state,
                                                                         sort_keys=True)}},
            "data": data})
        message = (f"CA rotation {new_state['nonce']} ({new_state['type']}): "
                   f"{new_state['phase'].lower()}; auth restarts with the new keys")
        logger.info("%s", message)
        self.ctx.post_event(body, "Normal", f"CARotation{new_state['phase']}", message)
        return new_state, data

    # -- children ----------------------------------------------------------------------------
    async def _apply_child(self, body: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
        """Create ``desired`` or patch what differs; False when someone else owns the name."""
        meta = desired["metadata"]
        current = await self.kube.get(desired["kind"], meta["namespace"], meta["name"])
        if current is None:
            try:
                await self.kube.create(desired)
                return True
            except KubeError as err:
                if err.status != 409:
                    raise
                current = await self.kube.get(desired["kind"], meta["namespace"], meta["name"])
                if current is None:
                    raise
        if not is_owned_by(current, body):
            return False
        patch = _patch_for(current, desired)
        if patch:
            await self.kube.merge_patch(desired["kind"], meta["namespace"], meta["name"], patch)
        return True

    async def _kube_rbac(self, body: Mapping[str, Any], logger: Logger) -> list[str]:
        """The kube agent's ClusterRole and binding: applied while ``spec.kube.enabled``,
        deleted otherwise. Returns those whose name someone else holds."""
        if not kube_enabled(body):
            await self.delete_kube_rbac(body, logger)
            return []
        foreign: list[str] = []
        for desired in kube_rbac(body):
            kind, name = desired["kind"], desired["metadata"]["name"]
            current = await self.kube.get(kind, "", name)
            if current is None:
                try:
                    await self.kube.create(desired)
                    logger.info("created the %s %s", kind, name)
                    continue
                except KubeError as err:
                    if err.status != 409:
                        raise
                    current = await self.kube.get(kind, "", name)
                    if current is None:
                        raise
            if not owns_cluster_scoped(current, body):
                foreign.append(f"{kind} {name}")
                continue
            patch = _patch_for(current, desired)
            if patch:
                await self.kube.merge_patch(kind, "", name, patch)
        return foreign

    async def delete_kube_rbac(self, body: Mapping[str, Any], logger: Logger) -> None:
        """Delete this Cluster's kube agent ClusterRoleBinding and ClusterRole (those its
        labels say are its own; the binding first: no moment with a binding to nothing)."""
        name = kube_rbac_name(body)
        for kind in ("ClusterRoleBinding", "ClusterRole"):
            current = await self.kube.get(kind, "", name)
            if current is not None and owns_cluster_scoped(current, body):
                await self.kube.delete(kind, "", name)
                logger.info("deleted the %s %s", kind, name)

    async def _scale_to_zero(self, body: Mapping[str, Any], name: str) -> None:
        """An owned Deployment ``name`` that runs replicas: scale it to 0 (never deleted)."""
        namespace = body["metadata"]["namespace"]
        current = await self.kube.get("Deployment", namespace, name)
        if current is None or not is_owned_by(current, body):
            return
        if int((current.get("spec") or {}).get("replicas", 1)) != 0:
            await self.kube.merge_patch("Deployment", namespace, name,
                                        {"spec": {"replicas": 0}})

    # -- status ------------------------------------------------------------------------------
    async def _observe(self, body: Mapping[str, Any]) -> tuple[Observation, dict[str, Any]]:
        meta = body["metadata"]
        names = ClusterNames(meta["name"])
        auth = readiness(await self.kube.get("Deployment", meta["namespace"], names.auth))
        proxy = readiness(await self.kube.get("Deployment", meta["namespace"], names.proxy))
        service = await self.kube.get("Service", meta["namespace"], names.proxy) or {}
        extra: dict[str, Any] = {
            "publicAddress": cluster_spec(body)["public_address"],
            "auth": {"ready": auth[0], "replicas": auth[1]},
            "proxy": {"ready": proxy[0], "replicas": proxy[1]},
        }
        parts = [("auth", auth), ("proxy", proxy)]
        if db_replicas(body) > 0:
            db = readiness(await self.kube.get("Deployment", meta["namespace"], names.db))
            extra["db"] = {"ready": db[0], "replicas": db[1]}
            parts.append(("db", db))
        else:
            extra["db"] = None  # no agents: removed from the status (a merge patch)
        if kube_enabled(body):
            kube = readiness(await self.kube.get("Deployment", meta["namespace"], names.kube))
            extra["kube"] = {"ready": kube[0], "replicas": kube[1]}
            parts.append(("kube", kube))
        else:
            extra["kube"] = None
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        addresses = [i.get("hostname") or i.get("ip") for i in ingress if isinstance(i, dict)]
        if any(addresses):
            extra["loadBalancer"] = [a for a in addresses if a]
        waiting = [f"{part} {ready}/{wanted} ready" for part, (ready, wanted)
                   in parts if wanted == 0 or ready < wanted]
        missing = await self._missing_dsn(body)
        if missing or waiting:
            progress = Check(False, "WaitingForSecret" if missing else "Progressing", "; ".join(
                ([missing] if missing else [])
                + (["waiting for pods: " + ", ".join(waiting)] if waiting else [])))
            return Observation(progress, _VALID, Check(True, "Owned", ""), reconciling=True), extra
        named = [_PART_NAMES[part] for part, _ in parts]
        what = f"{', '.join(named[:-1])} and {named[-1]} are"
        ready = Check(True, "Available", f"{what} ready at {extra['publicAddress']}")
        return Observation(ready, _VALID, Check(True, "Owned", "")), extra

    async def _missing_dsn(self, body: Mapping[str, Any]) -> str | None:
        """PostgreSQL: why the DSN Secret cannot be mounted (absent, or without its key), or
        None. The auth pods wait for it; creating it lets them start."""
        ref = postgres_ref(cluster_spec(body))
        if ref is None:
            return None
        secret = await self.kube.get("Secret", body["metadata"]["namespace"], ref.secret)
        if secret is None:
            return (f"the Secret {ref.secret} (spec.backend.postgres.dsnSecretRef) does not "
                    "exist: auth's pods wait for it")
        if ref.key not in (secret.get("data") or {}):
            return (f"the Secret {ref.secret} has no key {ref.key} "
                    "(spec.backend.postgres.dsnSecretRef): auth's pods wait for it")
        return None

    def _write(self, body: Mapping[str, Any], patch: Any, observation: Observation,
               extra: Mapping[str, Any] | None = None, rotation: Check | None = None) -> None:
        previous = body.get("status") or {}
        generation = int(body["metadata"].get("generation") or 0)
        status = with_rotation_condition(
            build_status(previous, observation, generation, self.ctx.clock(), extra), previous,
            rotation, generation, self.ctx.clock())
        for key, value in status_changes(previous, status).items():
            patch.status[key] = value

    async def deployment_changed(self, deployment: Mapping[str, Any], logger: Logger) -> None:
        """A Deployment of a Cluster changed: refresh that Cluster's readiness now."""
        meta = deployment.get("metadata") or {}
        owner = next((ref for ref in meta.get("ownerReferences") or ()
                      if ref.get("kind") == "Cluster" and ref.get("apiVersion") == API_VERSION),
                     None)
        if owner is None or self.ctx.kube is None:
            return
        body = await self.kube.get("Cluster", meta["namespace"], owner["name"])
        if body is None or body["metadata"].get("uid") != owner.get("uid"):
            return
        status = body.get("status") or {}
        if (body["metadata"].get("labels") or {}).get(OPERATOR_ID_LABEL, "") != (
                self.ctx.config.operator_id) or status.get("observedGeneration") is None:
            return  # another operator's, or not reconciled yet (the handler writes it first)
        async with self.ctx.lock(str(body["metadata"]["uid"])):
            observation, extra = await self._observe(body)
            extra = {**extra, **{k: status[k] for k in ("caSecret", "caRotation")
                                 if k in status}}
            new = build_status(status, observation, int(status["observedGeneration"]),
                               self.ctx.clock(), extra)
            changes = status_changes(status, new)
            if changes:
                await self.kube.merge_patch("Cluster", meta["namespace"], owner["name"],
                                            {"status": changes}, subresource="status")
                logger.debug("refreshed the readiness of Cluster %s", owner["name"])


def _problem(body: Mapping[str, Any]) -> str | None:
    """Why this Cluster cannot be deployed as declared, or None."""
    document = {"apiVersion": API_VERSION, "kind": Kind.CLUSTER.value,
                "metadata": {"name": body["metadata"]["name"]},
                "spec": dict(body.get("spec") or {})}
    try:
        validate([SourceDocument(f"clusters/{body['metadata'].get('namespace')}/"
                                 f"{body['metadata']['name']}", 0, 1, document)])
    except ValidationFailed as err:
        return "; ".join(f"{e.path}: {e.reason}" for e in err.errors)
    return (backend_problem(cluster_spec(body)) or db_selector_problem(body)
            or kube_problem(body))


def _finish(cas: Mapping[CertAuthorityType, CertAuthority],
            types: Iterable[CertAuthorityType], *,
            now: datetime | None = None) -> dict[CertAuthorityType, CertAuthority]:
    del now  # same signature as rotate()
    return finish_rotation(cas, types)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _patch_for(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch setting the fields of ``desired`` that ``current`` lacks or differs in
    (fields the API server added, such as defaults and clusterIP, are left alone)."""
    patch: dict[str, Any] = {}
    meta, want_meta = current.get("metadata") or {}, desired["metadata"]
    labels = meta.get("labels") or {}
    if any(labels.get(k) != v for k, v in want_meta.get("labels", {}).items()):
        patch.setdefault("metadata", {})["labels"] = want_meta["labels"]
    for key, value in desired.items():
        if key in ("apiVersion", "kind", "metadata", "status"):
            continue
        if desired["kind"] == "PersistentVolumeClaim" and key == "spec":
            continue  # immutable once bound
        if not _contains(current.get(key), value):
            patch[key] = value
    if desired["kind"] == "Deployment" and "spec" in patch:
        patch["spec"] = _recreate_drops_rolling_update(current, patch["spec"])
    return patch


def _recreate_drops_rolling_update(current: Mapping[str, Any],
                                   spec: Mapping[str, Any]) -> dict[str, Any]:
    """A Deployment going back to ``Recreate`` (auth from PostgreSQL to SQLite) must lose the
    ``rollingUpdate`` the API server filled in: it refuses both together."""
    strategy = dict(spec.get("strategy") or {})
    had = ((current.get("spec") or {}).get("strategy") or {}).get("rollingUpdate")
    if strategy.get("type") != "Recreate" or had is None:
        return dict(spec)
    return {**spec, "strategy": {**strategy, "rollingUpdate": None}}


def _contains(have: Any, want: Any) -> bool:
    """Is every field of ``want`` present and equal in ``have`` (lists item by item)?"""
    if isinstance(want, Mapping):
        return isinstance(have, Mapping) and all(_contains(have.get(k), v)
                                                 for k, v in want.items())
    if isinstance(want, list):
        return (isinstance(have, list) and len(have) == len(want)
                and all(_contains(h, w) for h, w in zip(have, want, strict=True)))
    return bool(have == want)
