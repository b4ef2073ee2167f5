"""How the kube agent reaches a cluster's API server: the server URL, the TLS context that
trusts the cluster's CA, and the agent's own credential (a bearer token, or a client
certificate), from one of::

    kube.clusters[].kubeconfig: PATH      the agent's own config (its admin chose the path)
    spec.kubeconfig_ref: {file: NAME}     a file in the agent's secrets directory
                                          (kube.secrets_dir, default DATA_DIR/secrets):
                                          one plain name, opened inside the directory only
    spec.kubeconfig_ref: {env: LIMEN_SECRET_...}  the kubeconfig in the agent's environment
    (none)                                the in-cluster service account: KUBERNETES_SERVICE_HOST
                                          and _PORT, the mounted token (re-read: bound tokens
                                          rotate) and CA (/var/run/secrets/kubernetes.io/
                                          serviceaccount)

A Resource (from Git, the API or a custom resource) never makes the agent read an arbitrary
path (``limen.api.secret_refs``: the same rule as TrustedClusters' ``token_secret_ref``).
Kubeconfigs: the current context's cluster (``server``, ``certificate-authority[-data]``,
``tls-server-name``, ``insecure-skip-tls-verify``) and user (``token``, ``tokenFile``,
``client-certificate[-data]`` + ``client-key[-data]`` with Ed25519 or ECDSA keys); exec and
auth-provider plugins are refused with a clear error. Called by
:mod:`limen.agents.kube.kube_service` and :mod:`limen.agents.kube.forwarder`.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from limen.api.resources import Resource
from limen.api.secret_refs import check_env_name, check_file_name
from limen.ca.keys import load_private_key
from limen.ca.tls import client_context
from limen.errors import AccessDenied, BadParameter

__all__ = ["IN_CLUSTER_DIR", "Upstream", "Upstreams", "parse_kubeconfig"]

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_MAX_KUBECONFIG = 1 << 20
_TOKEN_MAX_AGE = 60.0
_CACHE_SECONDS = 30.0


@dataclass
class Upstream:
    """One API server as the agent reaches it."""

    server: str
    """Base URL (``https://host:port``, maybe with a path prefix), no trailing slash."""
    ssl: ssl.SSLContext
    server_name: str | None = None
    """``tls-server-name``: the name expected in the server's certificate."""
    token_file: Path | None = None
    """A file holding the bearer token (re-read every minute)."""
    static_token: str = field(default="", repr=False)
    _token: str = field(default="", repr=False)
    _read_at: float = -1e9

    def token(self) -> str:
        """The bearer token to send, or empty when the credential is a client certificate."""
        if self.token_file is None:
            return self.static_token
        now = time.monotonic()
        if now - self._read_at > _TOKEN_MAX_AGE or not self._token:
            try:
                self._token = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as err:
                if not self._token:
                    raise BadParameter(f"cannot read the API server token {self.token_file}: "
                                       f"{err.strerror}") from None
            self._read_at = now
        return self._token

    @property
    def host_header(self) -> str:
        rest = self.server.split("://", 1)[-1]
        return rest.split("/", 1)[0]

    @property
    def path_prefix(self) -> str:
        rest = self.server.split("://", 1)[-1]
        return "/" + rest.split("/", 1)[1].rstrip("/") if "/" in rest else ""


def _b64(value: Any, what: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (ValueError, binascii.Error):
        raise BadParameter(f"kubeconfig {what} is not valid base64") from None


def _named(items: Any, name: Any, what: str) -> Mapping[str, Any]:
    for item in items or ():
        if isinstance(item, Mapping) and item.get("name") == name:
            inner = item.get(what)
            if isinstance(inner, Mapping):
                return inner
    raise BadParameter(f"the kubeconfig has no {what} {name!r}")


def _material(section: Mapping[str, Any], key: str, base: Path | None) -> bytes | None:
    if section.get(f"{key}-data"):
        return _b64(section[f"{key}-data"], f"{key}-data")
    if section.get(key):
        path = Path(str(section[key]))
        if base is None and not path.is_absolute():
            raise BadParameter(f"kubeconfig {key} must be an absolute path here")
        try:
            return (path if path.is_absolute() or base is None else base / path).read_bytes()
        except OSError as err:
            raise BadParameter(f"cannot read kubeconfig {key} {path}: {err.strerror}") from None
    return None


def parse_kubeconfig(text: str, base: Path | None = None) -> Upstream:
    """The current context's API server and credential; ``base``: where relative file names
    in the kubeconfig are (its directory), ``None`` for a kubeconfig from the environment."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise BadParameter("the kubeconfig is not valid YAML") from None
    if not isinstance(doc, Mapping):
        raise BadParameter("the kubeconfig must be a mapping")
    contexts = doc.get("contexts") or []
    current = doc.get("current-context") or (
        contexts[0].get("name") if contexts and isinstance(contexts[0], Mapping) else None)
    context = _named(contexts, current, "context")
    cluster = _named(doc.get("clusters"), context.get("cluster"), "cluster")
    user = _named(doc.get("users"), context.get("user"), "user") if context.get("user") else {}
    if user.get("exec") or user.get("auth-provider"):
        raise BadParameter("kubeconfig exec and auth-provider credentials are not supported by "
                           "the kube agent: use a token, a token file or a client certificate")
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith("https://"):
        raise BadParameter(f"the kubeconfig's server must be an https:// URL, not {server!r}")
    ca_pem = _material(cluster, "certificate-authority", base)
    cert_pem = _material(user, "client-certificate", base)
    key_pem = _material(user, "client-key", base)
    if (cert_pem is None) != (key_pem is None):
        raise BadParameter("the kubeconfig's client certificate and key go together")
    cert = x509.load_pem_x509_certificates(cert_pem) if cert_pem else None
    key = load_private_key(key_pem) if key_pem else None
    if cluster.get("insecure-skip-tls-verify") is True:
        context_ssl = ssl.create_default_context()
        context_ssl.check_hostname = False
        context_ssl.verify_mode = ssl.CERT_NONE
        if cert is not None and key is not None:
            raise BadParameter("insecure-skip-tls-verify with a client certificate is refused")
    elif ca_pem is not None:
        context_ssl = client_context(cert, key, x509.load_pem_x509_certificates(ca_pem))
    else:
        context_ssl = ssl.create_default_context()
        if cert is not None:
            raise BadParameter("a client certificate needs certificate-authority in the "
                               "kubeconfig")
    context_ssl.set_alpn_protocols(["http/1.1"])
    token_file = user.get("tokenFile")
    return Upstream(
        server=server, ssl=context_ssl,
        server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        static_token=str(user.get("token") or ""),
        token_file=Path(str(token_file)) if token_file and not user.get("token") else None)


def in_cluster(environ: Mapping[str, str], directory: Path = IN_CLUSTER_DIR) -> Upstream:
    """The in-cluster service account of the pod the agent runs in."""
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        raise BadParameter("the kube Resource names no kubeconfig_ref and the agent is not in "
                           "a pod (KUBERNETES_SERVICE_HOST is not set)")
    try:
        ca = x509.load_pem_x509_certificates((directory / "ca.crt").read_bytes())
    except (OSError, ValueError) as err:
        raise BadParameter(f"cannot read the service account CA in {directory}: {err}") from None
    context_ssl = client_context(None, None, ca)
    context_ssl.set_alpn_protocols(["http/1.1"])
    address = f"[{host}]" if ":" in host else host
    return Upstream(server=f"https://{address}:{port}", ssl=context_ssl,
                    token_file=directory / "token")


class Upstreams:
    """Each served cluster's :class:`Upstream`, built when first needed and again after
    :data:`_CACHE_SECONDS` (a changed kubeconfig is picked up)."""

    def __init__(self, secrets_dir: Path, static_paths: Mapping[str, str], *,
                 environ: Mapping[str, str] | None = None,
                 in_cluster_dir: Path = IN_CLUSTER_DIR,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.secrets_dir = Path(secrets_dir)
        self._static = dict(static_paths)
        self._environ = os.environ if environ is None else environ
        self._in_cluster_dir = in_cluster_dir
        self._clock = clock
        self._cache: dict[str, tuple[float, str, Upstream]] = {}

    def get(self, resource: Resource, *, static: bool) -> Upstream:
        ref = resource.spec.get("kubeconfig_ref")
        key = repr((static, self._static.get(resource.name), ref))
        hit = self._cache.get(resource.name)
        if hit is not None and hit[1] == key and self._clock() - hit[0] < _CACHE_SECONDS:
            return hit[2]
        upstream = self._build(resource, ref, static=static)
        self._cache[resource.name] = (self._clock(), key, upstream)
        return upstream

    def _build(self, resource: Resource, ref: Any, *, static: bool) -> Upstream:
        path = self._static.get(resource.name) if static else None
        if path:
            file = Path(os.path.realpath(path))
            return parse_kubeconfig(_read_limited(file, str(path)), file.parent)
        if ref is None:
            return in_cluster(self._environ, self._in_cluster_dir)
        if not isinstance(ref, Mapping) or len(ref) != (2 if "secret" in ref else 1):
            raise BadParameter("kubeconfig_ref must be {file: NAME}, {env: LIMEN_SECRET_...} "
                               "or {secret: NAME, key: KEY}")
        if "file" in ref:
            name = check_file_name(ref["file"])
            return parse_kubeconfig(self._read_secret_file(name), None)
        if "env" in ref:
            variable = check_env_name(ref["env"])
            text = self._environ.get(variable, "")
            if not text.strip():
                raise BadParameter(f"the environment variable {variable} holding the "
                                   "kubeconfig is not set in the kube agent")
            return parse_kubeconfig(text, None)
        raise BadParameter(f"kubeconfig_ref names the Kubernetes Secret {ref.get('secret')!r}: "
                           "the kube agent cannot read Secrets; mount it as a file in "
                           f"{self.secrets_dir} and use {{file: NAME}}")

    def _read_secret_file(self, name: str) -> str:
        try:
            base = os.path.realpath(self.secrets_dir, strict=True)
            resolved = os.path.realpath(os.path.join(base, name), strict=True)
        except OSError as err:
            raise BadParameter(f"cannot read the kubeconfig {name!r} in {self.secrets_dir}: "
                               f"{err.strerror}") from None
        if os.path.commonpath([resolved, base]) != base:
            raise AccessDenied(f"the kubeconfig {name!r} in {self.secrets_dir} points outside "
                               "it; the kube agent reads no other file")
        return _read_limited(Path(resolved), f"{name!r} in {self.secrets_dir}")


def _read_limited(path: Path, what: str) -> str:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise BadParameter(f"cannot read the kubeconfig {what}: {err.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise AccessDenied(f"the kubeconfig {what} is not a regular file")
        data = b""
        while len(data) <= _MAX_KUBECONFIG:
            chunk = os.read(fd, _MAX_KUBECONFIG + 1 - len(data))
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > _MAX_KUBECONFIG:
        raise BadParameter(f"the kubeconfig {what} is larger than 1 MiB")
    return data.decode("utf-8", "replace")
