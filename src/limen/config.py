"""Limen's settings: one YAML file validated by a schema, overridden by ``LIMEN_*`` environment
variables and command-line flags, passed explicitly (never read from globals).

Precedence: defaults < ``limen.yaml`` < environment < flags. ``load_settings`` is called by
``limen start``; every component receives the frozen ``Settings`` (or the group it needs).

Example ``limen.yaml``::

    cluster: {name: example, second_factor: otp}
    listeners: {web: 0.0.0.0:3080, ssh_proxy: 0.0.0.0:3023, tunnel: 0.0.0.0:3024}
    roles: [auth, proxy, node]
    gitops: {source: https://git.example/access.git, branch: main, path: access/, interval: 15s}
    diag_addr: 127.0.0.1:3000   # /metrics, /healthz, /readyz (off when absent)
    event_loop: uvloop          # or asyncio (the standard library's loop)
    node: {nodename: web1, labels: {env: dev},
           commands: [{name: kernel, command: [uname, -r], period: 1h}]}
    join: {token: ..., proxy: proxy.example:3080, ca_pin: "sha256:..."}   # agents apart from auth
    auth: {server_names: [limen-auth.limen.svc], proxy_token_file: /etc/limen/proxy-token,
           db_token_file: /etc/limen/db-token,   # static reusable tokens (Kubernetes)
           kube_token_file: /etc/limen/kube-token}
    trust: {secrets_dir: /etc/limen/secrets}   # where TrustedCluster token files are named
    db: {resources: [{labels: {env: dev}}],     # roles: [db]: serve the db Resources matching
         databases: [{name: pg1, protocol: postgres, address: 10.0.0.5:5432,
                      labels: {env: dev}, tls: {mode: verify-full}}]}   # plus these
    kube: {resources: [{labels: {env: dev}}],   # roles: [kube]: serve the kube Resources
           clusters: [{name: dev-k8s, labels: {env: dev},          # matching, plus these
                       kubeconfig: /etc/limen/dev-k8s.kubeconfig}],
           secrets_dir: /etc/limen/kube-secrets}   # where kubeconfig_ref: {file: NAME} is
    app: {resources: [{labels: {env: dev}}],    # roles: [app]: serve the app Resources
          apps: [{name: grafana, uri: "http://127.0.0.1:3000", labels: {env: dev}}]}
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from limen.errors import BadParameter

__all__ = [
    "ALL_ROLES",
    "NODENAME_PATTERN",
    "AppSettings",
    "BackendSettings",
    "ClusterSettings",
    "DBSettings",
    "GitOpsSettings",
    "KubeSettings",
    "Listeners",
    "NodeSettings",
    "Settings",
    "TrustSettings",
    "load_settings",
]

ALL_ROLES = ("auth", "proxy", "node", "db", "kube", "app")


@dataclass(frozen=True)
class ClusterSettings:
    name: str = field(default_factory=lambda: socket.gethostname().split(".")[0].lower())
    """The cluster name, baked into every certificate; never changes after the first start."""
    second_factor: str = "otp"
    """``otp`` (a second factor required at login: the authenticator app's code or a security
    key) or ``off`` (development only)."""
    webauthn_user_verification: str = "preferred"
    """Security keys: ``required`` refuses a key that did not verify its user (PIN or
    biometrics) on top of the touch; ``preferred`` asks for it without requiring it."""
    public_address: str = ""
    """Host:port users reach the proxy's web port at; default: the web listener."""
    tunnel_host: str = ""
    """A proxy: the host agents reach its tunnel listener at (with the listener's port), when
    it differs from ``public_address``'s, which a load balancer may front: agents dial every
    proxy at its own address (``limen.proxy.proxy_peers``). The operator sets the pod's IP."""


@dataclass(frozen=True)
class Listeners:
    """Bind addresses (``host:port``; port 0 picks a free port, reported in listeners.json)."""

    web: str = "127.0.0.1:3080"
    """HTTPS: login API, sign-up, web UI, and the agents' join calls."""
    ssh_proxy: str = "127.0.0.1:3023"
    """SSH proxy for ``ssh -J`` and ``lmsh ssh``."""
    tunnel: str = "127.0.0.1:3024"
    """Reverse-tunnel server that agents and leaf clusters dial. Empty: no tunnel listener;
    agents reach the tunnel through the web port (ALPN ``limen-tunnel``)."""
    auth: str = "127.0.0.1:3025"
    """Auth API (mutual TLS, a client certificate required in the handshake): only the
    proxy, agents and admins call it."""
    auth_join: str = ""
    """Auth's join listener (TLS, no client certificate; ``/v1/join`` only): where a
    proxy run apart from auth joins with its token. Empty: the auth listener's host, its
    port + 2 (3027), the address a proxy derives from ``--auth-server``."""
    node_ssh: str = "127.0.0.1:3022"
    """The node agent's own SSH listener (direct access when configured)."""
    postgres: str = "127.0.0.1:5433"
    mysql: str = "127.0.0.1:3036"
    kube: str = "127.0.0.1:3026"
    """The proxy's Kubernetes front (HTTPS, the user's kube certificate)."""

    def randomized(self) -> Listeners:
        """Every listener on a free loopback port (``--random-ports``), but those turned off
        (an empty address); the join listener stays at the auth port + 2, where a proxy
        looks for it."""
        return Listeners(**{f.name: "" if f.name == "auth_join" or getattr(self, f.name) == ""
                            else "127.0.0.1:0" for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class GitOpsSettings:
    source: str = ""
    """Repository path or URL (local path, ``file://``, ``https://``, ``ssh://``); empty = off."""
    branch: str = "main"
    path: str = ""
    """Sub-directory of the repository holding the documents (``access/``)."""
    interval_seconds: float = 15.0
    credentials_file: str = ""
    """File with ``username:password`` or a token for HTTPS remotes; never logged."""
    max_prune_fraction: float = 0.5
    """A commit may delete at most this share of the sync's objects (when it owns more than
    ``prune_guard_min``) unless allowed (docs/gitops.md: the prune guard); 1 turns it off."""
    prune_guard_min: int = 10
    """The prune guard applies only once the sync owns more than this many objects."""
    review_signers_file: str = ""
    """OpenSSH allowed signers file: when set, an access request review merged in Git counts
    only if the merge commit carries a good SSH signature by a key this file lists for the
    merger's e-mail (``limen.gitops.reviews``); empty: the merger's identity is not verified."""


@dataclass(frozen=True)
class LabelCommand:
    """A dynamic label: its value is the trimmed output of ``command``, run every period."""

    name: str
    command: tuple[str, ...]
    period_seconds: float = 60.0


NODENAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,62})$"
"""A node name: one DNS-like label (no dots, so ``name.<cluster>`` stays unambiguous; no ``=``,
``@`` or ``:``, which mean labels, logins and ports on the ``lmsh ssh`` command line)."""


@dataclass(frozen=True)
class NodeSettings:
    nodename: str = ""
    """The name this node announces and is reached by (``--nodename``); empty: the machine's
    hostname. Baked into the node's host certificate when it joins."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Static labels of the resources this agent serves."""
    sftp_server: str = ""
    """Path of OpenSSH's ``sftp-server`` for scp/sftp (``LIMEN_SFTP_SERVER``); empty: the
    usual places. Looked up at each request."""
    commands: tuple[LabelCommand, ...] = ()
    """Dynamic labels (``node.commands: [{name, command: [argv...], period: 1m}]``)."""


@dataclass(frozen=True)
class JoinSettings:
    """How a process without the auth role gets its identity and reaches the cluster."""

    token: str = ""
    """Join token (``lmctl tokens add``); used once, then DATA_DIR/host is reused."""
    proxy: str = ""
    """The proxy's web address agents join through and dial tunnels to."""
    auth_server: str = ""
    """The auth API address a separately run proxy talks to (mutual TLS)."""
    auth_join: str = ""
    """Auth's join listener, where that proxy joins with its token (``--auth-join``);
    empty: the host of ``auth_server``, its port + 2."""
    ca_pin: str = ""
    """``sha256:...`` pin of the cluster's TLS CA, given with the join token."""


@dataclass(frozen=True)
class AuthSettings:
    server_names: tuple[str, ...] = ()
    """Extra DNS names in the auth API's certificate (e.g. its Kubernetes Service)."""
    proxy_token_file: str = ""
    """File holding a static token proxies join with (reusable, role proxy only)."""
    db_token_file: str = ""
    """File holding a static token db agents join with (reusable, role db only; the
    operator's db agents)."""
    kube_token_file: str = ""
    """File holding a static token kube agents join with (reusable, role kube only; the
    operator's kube agent)."""
    proxy_server_names: tuple[str, ...] = ()
    """Extra DNS names in the proxies' certificates (e.g. their Kubernetes Service, which
    agents in the cluster join through)."""


@dataclass(frozen=True)
class TrustSettings:
    secrets_dir: str = ""
    """The only directory a TrustedCluster's ``token_secret_ref: {file: NAME}`` names a file
    in (``limen.trust.secrets``); empty: DATA_DIR/secrets (created 0700)."""


@dataclass(frozen=True)
class BackendSettings:
    """Where auth keeps the cluster's state (``backend: {type: postgres, dsn_file: ...}``)."""

    type: str = "sqlite"
    """``sqlite`` (DATA_DIR/backend.sqlite, one auth process) or ``postgres`` (several auth
    replicas on one PostgreSQL database)."""
    dsn_file: str = ""
    """PostgreSQL: a file holding the libpq connection string (never the string itself in
    ``limen.yaml`` or Git); ``LIMEN_BACKEND_DSN`` in the environment is the alternative."""
    ca_key_file: str = ""
    """A file (mode 0600) holding the 32-byte key, base64 or hex, that encrypts the CAs'
    private keys in the backend, the same on every auth replica: required with ``postgres``,
    optional with ``sqlite`` (``limen.auth.ca_key_file``; ``LIMEN_CA_KEY_FILE``)."""


@dataclass(frozen=True)
class DBSettings:
    """What a db agent (role ``db``) serves."""

    resources: tuple[Mapping[str, Any], ...] = ({"labels": {"*": "*"}},)
    """Selectors (``{labels: {k: v}}``, values as role label selectors: literal, list, ``*``
    glob, ``^regex$``) over the cluster's ``Resource`` objects of ``spec.kind: db``: every
    match is served (dynamic registration). Default: all of them; ``[]``: none."""
    databases: tuple[Mapping[str, Any], ...] = ()
    """Databases declared in this agent's own config (a Resource ``spec`` plus ``name`` and
    ``labels``), served whatever the selectors say."""


@dataclass(frozen=True)
class KubeSettings:
    """What a kube agent (role ``kube``) serves."""

    resources: tuple[Mapping[str, Any], ...] = ({"labels": {"*": "*"}},)
    """Selectors over the cluster's ``Resource`` objects of ``spec.kind: kube`` (as
    ``db.resources``): every match is served. Default: all of them; ``[]``: none."""
    clusters: tuple[Mapping[str, Any], ...] = ()
    """Kubernetes clusters declared in this agent's own config (``name``, ``labels``,
    ``description``, and ``kubeconfig``: a path, or none for the in-cluster account)."""
    secrets_dir: str = ""
    """The only directory a kube Resource's ``kubeconfig_ref: {file: NAME}`` names a file
    in; empty: DATA_DIR/secrets."""


@dataclass(frozen=True)
class AppSettings:
    """What an app agent (role ``app``) serves."""

    resources: tuple[Mapping[str, Any], ...] = ({"labels": {"*": "*"}},)
    """Selectors over the cluster's ``Resource`` objects of ``spec.kind: app`` (as
    ``db.resources``): every match is served. Default: all of them; ``[]``: none."""
    apps: tuple[Mapping[str, Any], ...] = ()
    """Apps declared in this agent's own config (an app Resource ``spec`` plus ``name`` and
    ``labels``), served whatever the selectors say."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(".limen-data")
    roles: tuple[str, ...] = ("auth", "proxy", "node")
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    listeners: Listeners = field(default_factory=Listeners)
    gitops: GitOpsSettings = field(default_factory=GitOpsSettings)
    node: NodeSettings = field(default_factory=NodeSettings)
    join: JoinSettings = field(default_factory=JoinSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    db: DBSettings = field(default_factory=DBSettings)
    kube: KubeSettings = field(default_factory=KubeSettings)
    app: AppSettings = field(default_factory=AppSettings)
    backend: BackendSettings = field(default_factory=BackendSettings)
    debug: bool = False
    diag_addr: str = ""
    """The diagnostics listener (``host:port``: /metrics, /healthz, /readyz; plain HTTP,
    ``limen.diag``); empty: off. Loopback unless the network in front is trusted."""
    event_loop: str = "uvloop"
    """The loop ``limen start`` runs on: ``uvloop`` or ``asyncio`` (:mod:`limen.net.event_loop`)."""

    @property
    def secrets_dir(self) -> Path:
        """``trust.secrets_dir``, or DATA_DIR/secrets when it is not set."""
        return Path(self.trust.secrets_dir) if self.trust.secrets_dir else \
            self.data_dir / "secrets"

    @property
    def kube_secrets_dir(self) -> Path:
        """``kube.secrets_dir``, or DATA_DIR/secrets when it is not set."""
        return Path(self.kube.secrets_dir) if self.kube.secrets_dir else \
            self.data_dir / "secrets"


_ADDRESS = {"type": "string", "pattern": r"^[^\s:]*:\d{1,5}$"}
_OPTIONAL_ADDRESS = {"anyOf": [_ADDRESS, {"const": ""}]}
_OPTIONAL_LISTENERS = ("postgres", "mysql", "kube", "tunnel")
"""Listeners an empty address turns off (their fronts still serve the proxy's web port; the
reverse tunnel there through TLS routing, ALPN ``limen-tunnel``)."""
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "data_dir": {"type": "string"},
        "roles": {"type": "array", "items": {"enum": list(ALL_ROLES)}, "minItems": 1},
        "debug": {"type": "boolean"},
        "diag_addr": {"type": "string", "pattern": r"^([^\s:]*:\d{1,5})?$"},
        "event_loop": {"enum": ["uvloop", "asyncio"]},
        "cluster": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"},
                "second_factor": {"enum": ["otp", "off"]},
                "webauthn_user_verification": {"enum": ["preferred", "required"]},
                "public_address": {"type": "string"},
                "tunnel_host": {"type": "string", "pattern": r"^[^\s]*$"},
            },
        },
        "listeners": {
            "type": "object", "additionalProperties": False,
            "properties": {f.name: _OPTIONAL_ADDRESS if f.name in _OPTIONAL_LISTENERS
                           else _ADDRESS for f in dataclasses.fields(Listeners)},
        },
        "gitops": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "source": {"type": "string"}, "branch": {"type": "string"},
                "path": {"type": "string"}, "interval": {"type": ["string", "number"]},
                "credentials_file": {"type": "string"},
                "max_prune_fraction": {"type": "number", "minimum": 0, "maximum": 1},
                "prune_guard_min": {"type": "integer", "minimum": 0},
                "review_signers_file": {"type": "string"},
            },
        },
        "node": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "nodename": {"type": "string", "pattern": NODENAME_PATTERN},
                "sftp_server": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "commands": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["name", "command"],
                    "properties": {
                        "name": {"type": "string", "pattern": r"^[A-Za-z0-9_./-]{1,63}$"},
                        "command": {"type": "array", "minItems": 1,
                                    "items": {"type": "string"}},
                        "period": {"type": ["string", "number"]},
                    },
                }},
            },
        },
        "join": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "token": {"type": "string"}, "proxy": _ADDRESS, "auth_server": _ADDRESS,
                "auth_join": _ADDRESS,
                "ca_pin": {"type": "string", "pattern": r"^(sha256:[0-9a-f]{64})?$"},
            },
        },
        "auth": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "server_names": {"type": "array", "items": {"type": "string"}},
                "proxy_token_file": {"type": "string"},
                "db_token_file": {"type": "string"},
                "kube_token_file": {"type": "string"},
                "proxy_server_names": {"type": "array", "items": {"type": "string"}},
            },
        },
        "trust": {
            "type": "object", "additionalProperties": False,
            "properties": {"secrets_dir": {"type": "string", "minLength": 1}},
        },
        "backend": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "type": {"enum": ["sqlite", "postgres"]},
                "dsn_file": {"type": "string", "minLength": 1},
                "ca_key_file": {"type": "string", "minLength": 1},
            },
        },
        "db": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "resources": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["labels"],
                    "properties": {"labels": {"type": "object"}},
                }},
                "databases": {"type": "array", "items": {
                    "type": "object", "required": ["name", "protocol", "address"],
                    "properties": {"name": {"type": "string"}, "labels": {"type": "object"}},
                }},
            },
        },
        "kube": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "resources": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["labels"],
                    "properties": {"labels": {"type": "object"}},
                }},
                "clusters": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["name"],
                    "properties": {"name": {"type": "string"}, "labels": {"type": "object"},
                                   "description": {"type": "string"},
                                   "kubeconfig": {"type": "string", "minLength": 1}},
                }},
                "secrets_dir": {"type": "string", "minLength": 1},
            },
        },
        "app": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "resources": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["labels"],
                    "properties": {"labels": {"type": "object"}},
                }},
                "apps": {"type": "array", "items": {
                    "type": "object", "required": ["name", "uri"],
                    "properties": {"name": {"type": "string"}, "labels": {"type": "object"},
                                   "uri": {"type": "string"}},
                }},
            },
        },
    },
}


def _seconds(value: str | float) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(text[: -len(suffix)]) * units[suffix]
    if text.replace(".", "", 1).isdigit():
        return float(text)
    raise BadParameter(f"invalid interval {value!r} (use 500ms, 15s, 1m)")


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` as given to ``--labels``."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise BadParameter(f"invalid label {part!r}: use key=value")
        labels[key.strip()] = value.strip()
    return labels


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    simple = {
        "LIMEN_DATA_DIR": ("data_dir",), "LIMEN_CLUSTER_NAME": ("cluster", "name"),
        "LIMEN_SECOND_FACTOR": ("cluster", "second_factor"),
        "LIMEN_PUBLIC_ADDRESS": ("cluster", "public_address"),
        "LIMEN_TUNNEL_HOST": ("cluster", "tunnel_host"),
        "LIMEN_GITOPS": ("gitops", "source"), "LIMEN_GITOPS_BRANCH": ("gitops", "branch"),
        "LIMEN_GITOPS_PATH": ("gitops", "path"), "LIMEN_GITOPS_INTERVAL": ("gitops", "interval"),
        "LIMEN_TOKEN": ("join", "token"), "LIMEN_PROXY": ("join", "proxy"),
        "LIMEN_AUTH_SERVER": ("join", "auth_server"), "LIMEN_CA_PIN": ("join", "ca_pin"),
        "LIMEN_AUTH_JOIN": ("join", "auth_join"),
        "LIMEN_NODENAME": ("node", "nodename"), "LIMEN_SFTP_SERVER": ("node", "sftp_server"),
        "LIMEN_CA_KEY_FILE": ("backend", "ca_key_file"),
        "LIMEN_DIAG_ADDR": ("diag_addr",), "LIMEN_EVENT_LOOP": ("event_loop",),
    }
    for var, path in simple.items():
        if var in env:
            _set(out, path, env[var])
    if "LIMEN_ROLES" in env:
        out["roles"] = [r.strip() for r in env["LIMEN_ROLES"].split(",") if r.strip()]
    if "LIMEN_LABELS" in env:
        _set(out, ("node", "labels"), parse_labels(env["LIMEN_LABELS"]))
    return out


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and key != "labels":
            merged[key] = _merge(dict(merged[key]), value)
        elif value is not None:
            merged[key] = value
    return merged


def load_settings(
    config_file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    random_ports: bool = False,
) -> Settings:
    """Build the frozen settings; raises ``BadParameter`` naming the offending key."""
    raw: dict[str, Any] = {}
    if config_file is not None:
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise BadParameter(f"{config_file}: not valid YAML: {err}") from err
        except OSError as err:
            raise BadParameter(f"cannot read config file {config_file}: {err.strerror}") from err
        if not isinstance(loaded, dict):
            raise BadParameter(f"{config_file}: the config must be a mapping")
        raw = loaded
    raw = _merge(raw, _env_overrides(os.environ if env is None else env))
    raw = _merge(raw, overrides or {})
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(raw), key=str)
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        raise BadParameter(f"config {where}: {first.message}")
    cluster = ClusterSettings(**raw.get("cluster", {}))
    listeners = Listeners(**raw.get("listeners", {}))
    if random_ports:
        listeners = listeners.randomized()
    gitops_raw = dict(raw.get("gitops", {}))
    interval = _seconds(gitops_raw.pop("interval", 15.0))
    node_raw = raw.get("node", {})
    auth_raw = raw.get("auth", {})
    roles = tuple(raw.get("roles", ("auth", "proxy", "node")))
    backend = BackendSettings(**raw.get("backend", {}))
    if backend.type == "postgres" and "auth" in roles and not backend.ca_key_file:
        raise BadParameter(
            "config backend.ca_key_file: required with backend.type postgres (a file, mode "
            "0600, holding the 32-byte key, base64 or hex, that encrypts the CA private keys "
            "in the database; the same file on every auth replica)")
    return Settings(
        data_dir=Path(raw.get("data_dir", ".limen-data")),
        roles=roles,
        cluster=cluster,
        listeners=listeners,
        gitops=GitOpsSettings(interval_seconds=interval, **gitops_raw),
        node=NodeSettings(nodename=str(node_raw.get("nodename", "")),
                          sftp_server=str(node_raw.get("sftp_server", "")),
                          labels=dict(node_raw.get("labels", {})),
                          commands=tuple(
                              LabelCommand(c["name"], tuple(c["command"]),
                                           _seconds(c.get("period", 60.0)))
                              for c in node_raw.get("commands", ()))),
        join=JoinSettings(**raw.get("join", {})),
        auth=AuthSettings(server_names=tuple(auth_raw.get("server_names", ())),
                          proxy_token_file=str(auth_raw.get("proxy_token_file", "")),
                          db_token_file=str(auth_raw.get("db_token_file", "")),
                          kube_token_file=str(auth_raw.get("kube_token_file", "")),
                          proxy_server_names=tuple(auth_raw.get("proxy_server_names", ()))),
        trust=TrustSettings(**raw.get("trust", {})),
        db=_db_settings(raw.get("db", {})),
        kube=_kube_settings(raw.get("kube", {})),
        app=_app_settings(raw.get("app", {})),
        backend=backend,
        debug=bool(raw.get("debug", False)),
        diag_addr=str(raw.get("diag_addr", "")),
        event_loop=str(raw.get("event_loop", "uvloop")),
    )


def _db_settings(raw: Mapping[str, Any]) -> DBSettings:
    default = DBSettings()
    return DBSettings(
        resources=tuple(raw["resources"]) if "resources" in raw else default.resources,
        databases=tuple(raw.get("databases", ())))


def _app_settings(raw: Mapping[str, Any]) -> AppSettings:
    default = AppSettings()
    return AppSettings(
        resources=tuple(raw["resources"]) if "resources" in raw else default.resources,
        apps=tuple(raw.get("apps", ())))


def _kube_settings(raw: Mapping[str, Any]) -> KubeSettings:
    default = KubeSettings()
    return KubeSettings(
        resources=tuple(raw["resources"]) if "resources" in raw else default.resources,
        clusters=tuple(raw.get("clusters", ())),
        secrets_dir=str(raw.get("secrets_dir", "")))
