"""A kube-apiserver stand-in for tests: a kmock handler that behaves like the real server.

Used by ``fixtures.py`` (the ``kube_api`` fixture), which runs it over HTTPS
(``server.py``) in a thread for kopf, the ``kubernetes`` client and kubectl.

kmock's own :class:`kmock.KubernetesEmulator` (0.8) gives objects no ``resourceVersion`` (so
kopf's finalizer JSON patch fails), answers POST with 200, has no PUT, delete-collection,
``generateName``, selectors, ``dryRun``, ``generation``, ``/status``, watch continuation or
garbage collection, serves lists kubectl cannot read and a ``/v1`` core groupVersion, and has
no HTTPS. :class:`KubeAPIEmulator` therefore takes from kmock only its request handler, through
its public API: request recording (``list(emulator)``), ``emulator.objects`` (every version
of every object, a :class:`kmock.ObjectsArray`), ``emulator.errors``, and test-defined
reactions such as ``emulator['get /version'] << 500``, which are matched first. Everything a
reaction does not answer is served with :class:`~k8s_emulator.store.ObjectStore` semantics:

- discovery (``/api``, ``/apis``, groups, versions, ``/version``) for the built-in types in
  ``registry.BUILTIN_TYPES`` and every CRD object created (kubectl, kopf);
- GET, LIST (``<Kind>List``, ``limit``/``continue``, label and field selectors), POST (201,
  ``generateName``), PUT, PATCH (merge, strategic merge handled as merge, JSON patch with
  ``test``), DELETE, delete-collection, ``dryRun=All`` and the ``status`` subresource;
- WATCH with ``resourceVersion``, ``timeoutSeconds``, selectors (objects entering or leaving a
  selector arrive as ADDED or DELETED), ``sendInitialEvents`` with the initial-events-end
  bookmark, and ``ERROR`` 410 for a trimmed resourceVersion.

How: the serving is kmock's lowest-priority (``fallback``) reaction. kmock hands a reaction
only its parsed :class:`kmock.Request`, so the aiohttp request travels beside it in a context
variable, and the response the emulator builds (a watch is a stream it writes itself) is the
one returned to aiohttp. URLs are parsed by the emulator's own ``paths.py``. kmock 0.8 cannot
parse ``.../namespaces`` collection paths (its handler fails with a 500); those are served
directly, so they are neither recorded in ``list(emulator)`` nor seen by reactions.

Authentication, impersonation and RBAC (``authn.py``, ``impersonation.py``, ``rbac.py``)
come first, before kmock and its reactions, as kube-apiserver's filters: with an
``authenticator`` the credentials must be known (401), ``Impersonate-*`` headers need the
``impersonate`` verb (403) and the request is authorised for the user it acts as (403, from
``requestinfo.py``); without one (the default) every request acts as the admin in
``system:masters`` and impersonation is always allowed. Every request, refused or not, lands
in ``audit`` (``audit.py``). ``selfsubjectreviews`` and ``selfsubjectaccessreviews``
(``kubectl auth whoami``/``can-i``, ``reviews.py``) answer for that user. Pods annotated to
run locally (``pods.py``) serve ``exec`` and ``attach`` over WebSocket (``podexec.py``) and
SPDY/3.1 (``podexec_spdy.py``), ``log`` (``podlogs.py``) and
``portforward`` as SPDY through a WebSocket (``portforward.py``).

Not emulated (real clusters differ): anonymous requests (always 401 with an authenticator),
token expiry and JWT service-account tokens (tokens are opaque strings), aggregated
ClusterRoles, a SPDY upgrade for ``portforward`` (kubectl 1.32 tunnels it through a WebSocket;
``exec`` and ``attach`` are served over SPDY, for ``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``),
container images and restarts (a pod's processes run once, on this machine), admission
webhooks, CRD schema defaulting, pruning and validation (Limen's operator validates itself),
server-side apply (415), strategic merge patch list-merge keys (lists are replaced), built-in
types' printer columns (kubectl gets NAME and AGE, and Pods' usual columns; CRDs get their own,
see ``printing.py``), conversion between CRD versions (only ``apiVersion`` changes), and the
two ``events`` types are stored apart.
"""

from __future__ import annotations

import base64
import contextvars
import json
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml

from .audit import audit_event
from .authn import Authenticator
from .errors import ApiError
from .impersonation import ImpersonationError, impersonate
from .paths import ResourcePath, parse_resource_path, segments
from .podexec import serve_attach, serve_exec
from .podexec_spdy import serve_attach_spdy, serve_exec_spdy, wants_spdy
from .podlogs import serve_logs
from .pods import PodRuntime
from .portforward import serve_portforward
from .printing import table
from .protobuf import decode_access_review
from .rbac import RBACAuthorizer
from .registry import ResourceType, api_group, api_group_list, api_resource_list
from .requestinfo import Attributes, forbidden, request_attributes
from .reviews import self_subject_access_review, self_subject_review
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import ObjectStore
from .users import ADMIN, UserInfo
from .watching import serve_watch

__all__ = ["KubeAPIEmulator"]

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
_REVIEW_GROUPS = ("authentication.k8s.io", "authorization.k8s.io")
_POD_STREAMS = ("exec", "attach", "log", "portforward")


def _json(doc: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(doc).encode(), status=status, content_type="application/json"
    )


@dataclass
class _Exchange:
    """One HTTP exchange: the aiohttp request, and the response the emulator made for it."""

    raw_request: aiohttp.web.BaseRequest
    body: bytes
    response: aiohttp.web.StreamResponse | None = None
    user: UserInfo = ADMIN  # who the request acts as (after impersonation)
    requester: UserInfo | None = None  # who authenticated (None: nobody)
    attributes: Attributes | None = None  # what it asked, for authorisation and audit


_EXCHANGE: contextvars.ContextVar[_Exchange] = contextvars.ContextVar("k8s_emulator_exchange")


@dataclass(frozen=True, kw_only=True)
class _Route:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch: bool


def _kmock_cannot_parse(path: str) -> bool:
    """kmock 0.8 fails on ``/api/V/namespaces`` and ``/apis/G/V/namespaces``: it takes
    ``namespaces`` for the prefix of a namespace name that is not there."""
    parts = segments(path)
    core = parts[:1] == ["api"]
    rest = parts[2:] if core else parts[3:] if parts[:1] == ["apis"] else []
    return rest == ["namespaces"]


@attrs.define(kw_only=True)
class KubeAPIEmulator(kmock.RawHandler):
    """A kmock handler with kube-apiserver semantics (see the module docstring)."""

    store: ObjectStore = attrs.field(factory=ObjectStore, init=False)
    server_address: str = ""  # host:port, announced in /api as kube-apiserver does
    watch_timeout: float = 1800.0  # for watches without timeoutSeconds (kube: 30-60 min)
    # None: any credentials act as the admin and nothing is refused (the default mode)
    authenticator: Authenticator | None = None
    audit: list[dict[str, Any]] = attrs.field(factory=list, init=False)  # see audit.py
    _closing: bool = attrs.field(default=False, init=False)
    _authorizer: RBACAuthorizer | None = attrs.field(default=None, init=False)
    _pods: PodRuntime | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        # The emulator answers whatever no reaction of a test matched.
        self.fallback << self._serve_unmatched
        if self.authenticator is not None:
            self._authorizer = RBACAuthorizer(self.store)

    def run_pods(self, directory: Path) -> None:
        """Start the kubelet (``pods.py``): annotated Pods run as local processes, their
        working directories under ``directory``. Call on the emulator's loop."""
        if self._pods is None:
            self._pods = PodRuntime(self.store, directory)

    @property
    def pods(self) -> PodRuntime:
        if self._pods is None:
            raise ApiError.bad_request("the emulator runs no pods")
        return self._pods

    async def shutdown(self) -> None:
        """End the watch and log streams and kill the pods' processes (before the server
        shuts down)."""
        self.close_watches()
        if self._pods is not None:
            await self._pods.close()

    @property
    def objects(self) -> kmock.ObjectsArray:
        """Every version of every object, keyed by ``(resource, namespace, name)``."""
        return self.store.history

    def close_watches(self) -> None:
        """End every open watch stream (before the server shuts down)."""
        self._closing = True
        self.store.watch_history.wake()

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        exchange = _Exchange(raw_request, await raw_request.read())
        response: aiohttp.web.StreamResponse | None = None
        try:
            exchange.user = self._admit(exchange)
        except ApiError as e:
            response = _json(e.status(), e.code)
        except ImpersonationError as e:
            response = aiohttp.web.Response(
                status=500, text=f'Internal Server Error: "{raw_request.path}": {e}'
            )
        try:
            if response is None:
                response = await self._answer(exchange)
            return response
        finally:
            self._audit(exchange, response)

    async def _answer(self, exchange: _Exchange) -> aiohttp.web.StreamResponse:
        raw_request = exchange.raw_request
        if _kmock_cannot_parse(raw_request.path):
            return await self._serve_directly(exchange)
        token = _EXCHANGE.set(exchange)
        try:
            answered = await super().__call__(raw_request)
        finally:
            _EXCHANGE.reset(token)
        return exchange.response if exchange.response is not None else answered

    # ---- authentication, impersonation, authorisation, audit ---------------------------

    def _admit(self, exchange: _Exchange) -> UserInfo:
        """Who the request acts as; 401 for bad credentials, 403 for what RBAC refuses."""
        request = exchange.raw_request
        if self.authenticator is None:
            requester = ADMIN
        else:
            transport = request.transport
            peercert = transport.get_extra_info("peercert") if transport is not None else None
            requester = self.authenticator.authenticate(
                request.headers.get("Authorization"), peercert
            )
        exchange.requester = requester
        user = impersonate(request.headers, requester, self.allowed)
        attributes = request_attributes(user, request.method, request.path, request.query)
        exchange.attributes = attributes
        if not self.allowed(attributes):
            raise forbidden(attributes)
        return user

    def _audit(self, exchange: _Exchange, response: aiohttp.web.StreamResponse | None) -> None:
        request = exchange.raw_request
        if isinstance(response, aiohttp.web.WebSocketResponse):
            code = 101
        else:
            code = response.status if response is not None else 500
        attributes = exchange.attributes or request_attributes(
            UserInfo(""), request.method, request.path, request.query
        )
        self.audit.append(
            audit_event(
                uri=request.path_qs,
                requester=exchange.requester,
                impersonated=exchange.user if exchange.attributes is not None else None,
                attributes=attributes,
                code=code,
                source_ip=request.remote or "",
                user_agent=request.headers.get("User-Agent", ""),
            )
        )

    def allowed(self, attributes: Attributes) -> bool:
        """The authorizer's decision (everything is allowed without authentication)."""
        return self._authorizer is None or self._authorizer.allowed(attributes)

    async def _serve_unmatched(self, request: kmock.Request) -> bytes:
        """kmock's fallback reaction: serve the exchange; kmock's own response is discarded."""
        exchange = _EXCHANGE.get()
        exchange.response = await self._respond(exchange)
        return b""

    async def _serve_directly(self, exchange: _Exchange) -> aiohttp.web.StreamResponse:
        """Serve without kmock; a failure is recorded in ``errors`` as kmock records one."""
        try:
            return await self._respond(exchange)
        except Exception as e:
            if not self.active:
                raise
            self.errors.append(e)
            return aiohttp.web.Response(text=traceback.format_exc(), status=500)

    async def _respond(self, exchange: _Exchange) -> aiohttp.web.StreamResponse:
        try:
            return await self._serve(exchange)
        except ApiError as e:
            return _json(e.status(), e.code)

    async def _serve(self, exchange: _Exchange) -> aiohttp.web.StreamResponse:
        request = exchange.raw_request
        parts = segments(request.path)
        method = request.method.upper()
        if method == "GET" and len(parts) <= 3:
            doc = self._discovery(parts)
            if doc is not None:
                return _json(doc)
        route = self._route(request.path)
        params = dict(request.query)
        if route.rtype.group in _REVIEW_GROUPS:
            return self._review(exchange, route, method)
        if route.subresource in _POD_STREAMS and route.rtype.group_resource == "pods":
            return await self._pod_stream(exchange, route, method)
        if route.watch or (method == "GET" and params.get("watch") in ("true", "1")):
            self._check_verb(route, "watch")
            labels, fields = self._selectors(route.rtype, params)
            return await serve_watch(
                request,
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
            doc = self._get_or_list(route, params)
            accept = request.headers.get("Accept", "")
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
            obj = store.create(rtype, ns, self._body(exchange), dry_run=dry_run)
            return _json(store.present(obj, rtype), 201)
        if method == "PUT" and name is not None:
            self._check_verb(route, "update")
            obj = store.update(
                rtype, ns, name, self._body(exchange), subresource=sub, dry_run=dry_run
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
                rtype, ns, name, self._body(exchange), patch_type, subresource=sub, dry_run=dry_run
            )
            return _json(store.present(obj, rtype))
        if method == "DELETE" and sub is None:
            options = self._body(exchange) if exchange.body else {}
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

    def _route(self, path: str) -> _Route:
        parsed: ResourcePath | None = parse_resource_path(path)
        if parsed is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rtype = self.store.find_type(parsed.group, parsed.version, parsed.plural)
        namespace, name, subresource = parsed.namespace, parsed.name, parsed.subresource
        if (
            (namespace is not None and not rtype.namespaced)
            or (name and rtype.namespaced and namespace is None)
            or (subresource is not None and subresource not in rtype.subresource_names)
        ):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Route(
            rtype=rtype, namespace=namespace, name=name, subresource=subresource, watch=parsed.watch
        )

    def _review(self, exchange: _Exchange, route: _Route, method: str) -> aiohttp.web.Response:
        if method != "POST" or route.name is not None:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if route.rtype.plural == "selfsubjectreviews":
            return _json(self_subject_review(exchange.user), 201)
        if _content_type(exchange.raw_request) == "application/vnd.kubernetes.protobuf":
            body = decode_access_review(exchange.body)
        else:
            body = self._body(exchange)
        return _json(self_subject_access_review(exchange.user, body, self.allowed), 201)

    async def _pod_stream(
        self, exchange: _Exchange, route: _Route, method: str
    ) -> aiohttp.web.StreamResponse:
        request, sub = exchange.raw_request, route.subresource
        namespace, name = route.namespace, route.name
        assert namespace is not None
        if name is None or method not in ("GET", "POST") or (sub == "log" and method != "GET"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        if sub == "log":
            closing = lambda: self._closing  # noqa: E731
            return await serve_logs(request, self.pods, namespace, name, request.query, closing)
        if sub == "exec" and wants_spdy(request):
            return await serve_exec_spdy(request, self.pods, namespace, name, request.query)
        if sub == "exec":
            return await serve_exec(request, self.pods, namespace, name, request.query)
        if sub == "attach" and wants_spdy(request):
            return await serve_attach_spdy(request, self.pods, namespace, name, request.query)
        if sub == "attach":
            return await serve_attach(request, self.pods, namespace, name, request.query)
        return await serve_portforward(request, self.pods, namespace, name, request.query)

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

    def _body(self, exchange: _Exchange) -> Any:
        content_type = _content_type(exchange.raw_request)
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
                return yaml.safe_load(exchange.body)
            return json.loads(exchange.body)
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

    def _get_or_list(self, route: _Route, params: Mapping[str, str]) -> dict[str, Any]:
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


def _content_type(request: aiohttp.web.BaseRequest) -> str:
    value = request.headers.get("Content-Type", "")
    return value.split(";")[0].strip().lower()


def _not_found() -> dict[str, Any]:
    raise ApiError(404, "NotFound", "the server could not find the requested resource")
