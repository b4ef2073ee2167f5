"""A kube-apiserver stand-in for tests: kmock's emulator made to behave like the real server.

Used by ``tests/kube/fixtures.py`` (the ``kube_api`` fixture), which runs it over HTTPS in a
thread for kopf, the ``kubernetes`` client and kubectl.

kmock 0.8's :class:`kmock.KubernetesEmulator` gives objects no ``resourceVersion`` (so kopf's
finalizer JSON patch fails), answers POST with 200, has no PUT, delete-collection,
``generateName``, selectors, ``dryRun``, ``generation``, ``/status``, watch continuation or
garbage collection, serves lists kubectl cannot read and a ``/v1`` core groupVersion, has no
HTTPS, and re-scans its whole request log on every request. :class:`KubeAPIEmulator` keeps
kmock's handler (request parsing and recording, ``emulator.objects`` with every version of every
object, test-defined reactions such as ``emulator['get /version'] << 500``, which are matched
first) and replaces the default serving with :class:`~kube.store.ObjectStore` semantics:

- discovery (``/api``, ``/apis``, groups, versions, ``/version``) for the built-in types in
  ``registry.BUILTIN_TYPES`` and every CRD object created (kubectl, kopf);
- GET, LIST (``<Kind>List``, ``limit``/``continue``, label and field selectors), POST (201,
  ``generateName``), PUT, PATCH (merge, strategic merge handled as merge, JSON patch with
  ``test``), DELETE, delete-collection, ``dryRun=All`` and the ``status`` subresource;
- WATCH with ``resourceVersion``, ``timeoutSeconds``, selectors (objects entering or leaving a
  selector arrive as ADDED or DELETED), ``sendInitialEvents`` with the initial-events-end
  bookmark, and ``ERROR`` 410 for a trimmed resourceVersion.

Not emulated (real clusters differ): authentication and RBAC (any token is accepted), admission
webhooks, CRD schema defaulting, pruning and validation (Limen's operator validates itself),
server-side apply (415), strategic merge patch list-merge keys (lists are replaced), built-in
types' printer columns (kubectl gets NAME and AGE; CRDs get their own columns, see
``printing.py``), conversion between CRD versions (only ``apiVersion`` changes), and the two
``events`` types are stored apart.

:class:`HTTPSServer` is kmock's :class:`kmock.Server` on TLS, without kmock's global DNS
interception (several servers may run in several threads).
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Mapping
from typing import Any, Self

import aiohttp.test_utils
import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal.parsing import parse_path

from .errors import ApiError
from .printing import table
from .registry import ResourceType, api_group, api_group_list, api_resource_list
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import ObjectStore
from .watching import serve_watch

__all__ = ["HTTPSServer", "KubeAPIEmulator"]

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0",
    "platform": "linux/amd64",
    "gitCommit": "kube-api-emulator",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
}
_PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "merge",
}
_CRD_TYPE = ("apiextensions.k8s.io", "customresourcedefinitions")


def _json(doc: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(doc).encode(), status=status, content_type="application/json"
    )


@attrs.define(kw_only=True)
class _Route:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch: bool


@attrs.define(kw_only=True)
class KubeAPIEmulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with kube-apiserver semantics (see the module docstring)."""

    store: ObjectStore = attrs.field(init=False)
    server_address: str = ""  # host:port, announced in /api as kube-apiserver does
    watch_timeout: float = 1800.0  # for watches without timeoutSeconds (kube: 30-60 min)
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        # kmock's default reactions are not registered: _serve() answers whatever no
        # test-defined reaction matched, without scanning the request log.
        self.store = ObjectStore(self._objects)

    def close_watches(self) -> None:
        """End every open watch stream (before the server shuts down)."""
        self._closing = True
        self.store.watch_history.wake()

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        try:
            parse_path(raw_request.path)
        except ValueError:  # kmock 0.8 cannot parse some paths, e.g. /api/v1/namespaces
            body = await raw_request.read()
            request = kmock.Request(
                id=len(self._requests),
                raw_request=raw_request,
                url=raw_request.url,
                method=raw_request.method,
                params=dict(raw_request.query),
                headers=dict(raw_request.headers),
                body=body,
                text=body.decode(errors="replace"),
            )
            self._requests.append(request)
            try:
                return await self._handle(request)
            except Exception as e:  # recorded like kmock does, so the fixture reports it
                if not self._errors:
                    raise
                self._errors[-1].append(e)
                return await self._render_error(e)
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if self._payloads:  # reactions a test added, e.g. to inject a failure
            try:
                return await kmock.RawHandler._handle(self, request)
            except NotImplementedError:
                pass
        try:
            return await self._serve(request)
        except ApiError as e:
            return _json(e.status(), e.code)

    async def _serve(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        parts = [p for p in request.url.path.split("/") if p]
        method = str(request.method.value).upper()
        if method == "GET" and len(parts) <= 3:
            doc = self._discovery(parts)
            if doc is not None:
                return _json(doc)
        route = self._route(parts)
        params = dict(request.params)
        if route.watch or (method == "GET" and params.get("watch") in ("true", "1")):
            self._check_verb(route, "watch")
            labels, fields = self._selectors(route.rtype, params)
            assert request._raw_request is not None  # kmock keeps it for every served request
            return await serve_watch(
                request._raw_request,
                self.store,
                route.rtype,
                namespace=route.namespace,
                name=route.name,
                labels=labels,
                fields=fields,
                params=params,
                default_timeout=self.watch_timeout,
                closing=lambda: self._closing,
            )
        if method == "GET":
            doc = self._get_or_list(request, route, params)
            accept = next((v for k, v in request.headers.items() if k.lower() == "accept"), "")
            if "as=Table" in accept.split(",")[0]:
                objs = doc.get("items", [doc])
                doc = table(
                    route.rtype,
                    objs,
                    str(self.store.resource_version),
                    include_object=params.get("includeObject") == "Object",
                )
            return _json(doc)
        dry_run = self._dry_run(params)
        store, rtype, ns, name, sub = (
            self.store,
            route.rtype,
            route.namespace,
            route.name,
            route.subresource,
        )
        if method == "POST" and name is None:
            self._check_verb(route, "create")
            obj = store.create(rtype, ns, self._body(request), dry_run=dry_run)
            return _json(store.present(obj, rtype), 201)
        if method == "PUT" and name is not None:
            self._check_verb(route, "update")
            obj = store.update(
                rtype, ns, name, self._body(request), subresource=sub, dry_run=dry_run
            )
            return _json(store.present(obj, rtype))
        if method == "PATCH" and name is not None:
            self._check_verb(route, "patch")
            patch_type = _PATCH_TYPES.get(_content_type(request))
            if patch_type is None:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - "
                    f"accepted media types include: {', '.join(_PATCH_TYPES)}",
                )
            obj = store.patch(
                rtype, ns, name, self._body(request), patch_type, subresource=sub, dry_run=dry_run
            )
            return _json(store.present(obj, rtype))
        if method == "DELETE" and sub is None:
            options = self._body(request) if request.body else {}
            propagation = params.get("propagationPolicy") or options.get("propagationPolicy")
            if options.get("orphanDependents") is True:
                propagation = "Orphan"
            if name is None:
                self._check_verb(route, "deletecollection")
                labels, fields = self._selectors(rtype, params)
                objs = store.delete_collection(
                    rtype, ns, labels, fields, propagation=propagation, dry_run=dry_run
                )
                return _json(self._list_doc(rtype, objs))
            self._check_verb(route, "delete")
            obj, gone = store.delete(
                rtype,
                ns,
                name,
                propagation=propagation,
                preconditions=options.get("preconditions"),
                dry_run=dry_run,
            )
            if rtype.custom or not gone:
                return _json(store.present(obj, rtype))
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "group": rtype.group,
                        "kind": rtype.plural,
                        "uid": obj["metadata"]["uid"],
                    },
                }
            )
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )

    # ---- routing ------------------------------------------------------------------------

    def _discovery(self, parts: list[str]) -> dict[str, Any] | None:
        types = list(self.store.types.values())
        match parts:
            case []:
                return {
                    "paths": sorted(
                        {"/api", "/api/v1", "/apis", "/version"}
                        | {f"/apis/{t.group}/{t.version}" for t in types if t.group}
                        | {f"/apis/{t.group}" for t in types if t.group}
                    )
                }
            case ["version"]:
                return KUBERNETES_VERSION
            case ["api"]:
                return {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": self.server_address}
                    ],
                }
            case ["apis"]:
                return api_group_list(types)
            case ["api", version]:
                return api_resource_list(types, "", version) or _not_found()
            case ["apis", group]:
                return api_group(types, group) or _not_found()
            case ["apis", group, version]:
                return api_resource_list(types, group, version) or _not_found()
        return None

    def _route(self, parts: list[str]) -> _Route:
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        watch = rest[0] == "watch"  # the legacy /watch/ prefix
        rest = rest[1:] if watch else rest
        namespace = None
        if (
            len(rest) >= 3
            and rest[0] == "namespaces"
            and not (group == "" and len(rest) == 3 and rest[2] == "status")
        ):
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype = self.store.find_type(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        subresource = "/".join(rest[2:]) or None
        if (
            (namespace is not None and not rtype.namespaced)
            or (name and rtype.namespaced and namespace is None)
            or subresource not in (None, "status")
            or (subresource and not rtype.status_subresource)
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Route(
            rtype=rtype, namespace=namespace, name=name, subresource=subresource, watch=watch
        )

    def _check_verb(self, route: _Route, verb: str) -> None:
        if verb not in route.rtype.verbs:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )

    def _dry_run(self, params: Mapping[str, str]) -> bool:
        value = params.get("dryRun")
        if value not in (None, "All"):
            raise ApiError.bad_request(f'Invalid dry run value: "{value}"')
        return value == "All"

    def _body(self, request: kmock.Request) -> Any:
        content_type = _content_type(request)
        if content_type and "json" not in content_type and "yaml" not in content_type:
            # e.g. protobuf from kubectl's typed clients: 415 makes client-go retry with JSON
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media "
                f"types include: application/json, application/yaml ({content_type})",
            )
        try:
            if "yaml" in content_type:
                return yaml.safe_load(request.body)
            return json.loads(request.body)
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError.bad_request(f"the body of the request could not be decoded: {e}") from e

    def _selectors(self, rtype: ResourceType, params: Mapping[str, str]) -> tuple[Any, Any]:
        try:
            return (
                parse_label_selector(params.get("labelSelector")),
                parse_field_selector(params.get("fieldSelector"), rtype.field_labels),
            )
        except SelectorError as e:
            raise ApiError.bad_request(str(e)) from e

    # ---- reading ------------------------------------------------------------------------

    def _get_or_list(
        self, request: kmock.Request, route: _Route, params: Mapping[str, str]
    ) -> dict[str, Any]:
        rtype = route.rtype
        if route.name is not None:
            self._check_verb(route, "get")
            return self.store.present(self.store.get(rtype, route.namespace, route.name), rtype)
        self._check_verb(route, "list")
        labels, fields = self._selectors(rtype, params)
        objs = self.store.list(rtype, route.namespace, labels, fields)
        after = params.get("continue")
        if after:
            try:
                position = tuple(json.loads(base64.urlsafe_b64decode(after)))
            except ValueError as e:
                raise ApiError.bad_request(f"invalid continue token: {e}") from e
            objs = [
                o
                for o in objs
                if (o["metadata"].get("namespace") or "", o["metadata"]["name"]) > position
            ]
        limit = int(params.get("limit") or 0)
        doc = self._list_doc(rtype, objs[:limit] if limit else objs)
        if limit and len(objs) > limit:
            last = objs[limit - 1]["metadata"]
            token = json.dumps([last.get("namespace") or "", last["name"]]).encode()
            doc["metadata"]["continue"] = base64.urlsafe_b64encode(token).decode()
            doc["metadata"]["remainingItemCount"] = len(objs) - limit
        return doc

    def _list_doc(self, rtype: ResourceType, objs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": [self.store.present(o, rtype) for o in objs],
        }


def _content_type(request: kmock.Request) -> str:
    value = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
    return value.split(";")[0].strip().lower()


def _not_found() -> dict[str, Any]:
    raise ApiError(404, "NotFound", "the server could not find the requested resource")


@attrs.mutable
class HTTPSServer(kmock.Server):
    """kmock's server on HTTPS with ``ssl_context``; no client session, no DNS interception."""

    ssl_context: ssl.SSLContext | None = attrs.field(default=None, kw_only=True)

    async def __aenter__(self) -> Self:
        if self._managed_server is not None:
            raise RuntimeError("The server can be started/entered only once.")
        server = aiohttp.test_utils.RawTestServer(self.handler, host=self._host, port=self._port)
        await server.start_server(ssl=self.ssl_context)
        self._managed_server = server
        self.handler.servers.append(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if isinstance(self.handler, KubeAPIEmulator):
            self.handler.close_watches()
        self.handler.servers.remove(self)
        server, self._managed_server = self._managed_server, None
        if server is not None:
            # TLS connections wait for the client's close_notify when closed gracefully; a
            # client that keeps an idle connection would leave its socket open past the loop.
            web_server = server.runner.server if server.runner else None
            handlers = list(web_server._connections) if web_server else []
            transports = [h.transport for h in handlers if h.transport is not None]
            await server.close()
            for transport in transports:
                transport.abort()
