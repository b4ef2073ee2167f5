"""Validation of declared documents: envelope, CRD schema, semantics, secrets, duplicates."""

from __future__ import annotations

import copy
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.api.loader import SourceDocument, load_path, load_text
from limen.api.resources import Kind, Resource
from limen.api.validation import SECRET_HINT, format_path, parse_duration, validate
from limen.errors import BadParameter, ValidationFailed

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"

VALID: dict[Kind, str] = {
    Kind.USER: """
apiVersion: limen.dev/v1alpha1
kind: User
metadata: {name: alice@example.com, labels: {team: platform}}
spec:
  roles: [dev, auditor]
  traits: {logins: [alice, ubuntu], kubernetes_groups: [dev], db_users: [alice], team: []}
""",
    Kind.ROLE: """
apiVersion: limen.dev/v1alpha1
kind: Role
metadata: {name: dev, annotations: {note: 'developers'}}
spec:
  options:
    max_session_ttl: 8h
    client_idle_timeout: 1h30m
    forward_agent: false
    port_forwarding: true
    ssh_file_copy: true
    disconnect_expired_cert: true
    require_session_mfa: false
    record_session: {default: best_effort, ssh: strict}
    enhanced_recording: [command, network]
    lock: best_effort
    cert_format: standard
    max_sessions: 10
    max_connections: 5
    create_host_user: false
    permit_x11_forwarding: false
  allow:
    logins: ['{{internal.logins}}', ubuntu, 'u-{{email.local(external.email)}}']
    node_labels: {env: [dev, staging], team: '{{external.team}}', host: '^web-[0-9]+$',
                  '*': '*'}
    kubernetes_groups: [developers]
    kubernetes_users: ['{{internal.kubernetes_users}}']
    kubernetes_labels: {env: dev}
    kubernetes_resources: [{kind: pod, name: '^api-.*$', namespace: dev, verbs: [get, list]}]
    db_labels: {engine: postgres}
    db_names: ['*']
    db_users: ['{{regexp.replace(external.groups, "^db-(.*)$", "$1")}}']
    db_roles: [reader]
    app_labels: {env: dev}
    cluster_labels: {region: eu}
    rules:
      - {resources: [session, event], verbs: [list, read], where: 'contains(user.spec.roles, "x")'}
  deny:
    node_labels: {env: prod}
""",
    Kind.TRUSTED_CLUSTER: """
apiVersion: limen.dev/v1alpha1
kind: TrustedCluster
metadata: {name: org-a}
spec:
  enabled: true
  proxy_address: proxy.org-a.example:3080
  tunnel_address: '[::1]:3024'
  token_secret_ref: {file: org-a.token}
  role_map:
    - {remote: dev, local: [visitor]}
    - {remote: '^admin-(.*)$', local: ['ops-$1']}
  ca_pin: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
""",
    Kind.RESOURCE: """
apiVersion: limen.dev/v1alpha1
kind: Resource
metadata: {name: orders-dev, labels: {env: dev, limen.dev/engine: postgres}}
spec:
  kind: db
  protocol: postgres
  address: db.internal:5432
  database: orders
  description: Orders database
  credentials_ref: {secret: orders-db, key: password}
  tls: {ca_file: /etc/ssl/db-ca.pem, server_name: db.internal, insecure_skip_verify: false}
""",
    Kind.CLUSTER: """
apiVersion: limen.dev/v1alpha1
kind: Cluster
metadata: {name: main}
spec:
  public_address: limen.example.com:443
  cluster_name: main
  auth: {replicas: 1, image: 'ghcr.io/limen/limen:0.1.0', resources: {requests: {cpu: 100m}}}
  proxy: {replicas: 2, service_type: LoadBalancer}
  backend: {type: postgres, dsn_secret_ref: {secret: limen-db, key: dsn}}
  second_factor: otp
  ca_rotation: {type: user, nonce: '2024-05-01', grace_period: 30h}
  gitops: {repo: 'https://git.example/access.git', branch: main, poll_interval: 1m,
           credentials_ref: {env: GIT_TOKEN}}
""",
}


def doc(text: str, source: str = "roles/dev.yaml") -> list[SourceDocument]:
    return load_text(text, source)


def messages(text: str, source: str = "roles/dev.yaml") -> list[str]:
    """Every error of a batch as ``source[index] path: reason`` (without the line)."""
    with pytest.raises(ValidationFailed) as caught:
        validate(doc(text, source))
    return [f"{e.source}[{e.index}] {e.path}: {e.reason}" for e in caught.value.errors]


def role(spec: dict[str, Any], name: str = "dev") -> str:
    return yaml.safe_dump(
        {"apiVersion": "limen.dev/v1alpha1", "kind": "Role", "metadata": {"name": name},
         "spec": spec}
    )


def document(kind: Kind, spec_changes: dict[str, Any] | None = None, **top: Any) -> str:
    data = yaml.safe_load(VALID[kind])
    data["spec"].update(spec_changes or {})
    data.update(top)
    return yaml.safe_dump(data)


@pytest.mark.parametrize("kind", list(VALID), ids=lambda k: k.value)
def test_valid_example_passes_and_round_trips(kind: Kind) -> None:
    [source] = doc(VALID[kind])
    [resource] = validate([source])
    assert (resource.kind, resource.name) == (kind, source.data["metadata"]["name"])
    assert resource.to_document(with_status=False) == source.data
    assert Resource.from_document(resource.to_document()) == resource


def test_repository_examples_validate() -> None:
    resources = validate(load_path(EXAMPLES))
    assert {r.key for r in resources} >= {"Role/dev", "Role/ops", "User/alice"}


def test_status_is_kept_but_only_needs_to_be_a_mapping() -> None:
    text = VALID[Kind.ROLE] + "status: {observedGeneration: 3, anything: [1]}\n"
    [resource] = validate(doc(text))
    assert resource.status == {"observedGeneration": 3, "anything": [1]}
    assert messages(VALID[Kind.ROLE] + "status: broken\n") == [
        "roles/dev.yaml[0] status: expected a mapping, got 'broken'"
    ]


def test_null_fields_are_dropped_as_the_api_server_does() -> None:
    [resource] = validate(doc(role({"allow": {"logins": ["a"], "node_labels": None},
                                    "deny": None})))
    assert resource.spec == {"allow": {"logins": ["a"]}}


def test_empty_spec_is_missing() -> None:
    assert messages("apiVersion: limen.dev/v1alpha1\nkind: User\nmetadata: {name: a}\nspec:\n") == [
        "roles/dev.yaml[0] spec: required field is missing"
    ]


def test_error_carries_source_index_line_and_exact_format() -> None:
    text = VALID[Kind.USER] + "---\n" + role({"allow": {"node_labels": {"env": "^(prod"}}})
    with pytest.raises(ValidationFailed) as caught:
        validate(doc(text))
    [error] = caught.value.errors
    assert (error.source, error.index) == ("roles/dev.yaml", 1)
    assert error.path == "spec.allow.node_labels.env"
    assert error.reason == "'^(prod' is not a valid regular expression"
    assert error.line == 16  # VALID[USER] is 7 lines with its leading newline, then ---
    assert str(error) == (
        "roles/dev.yaml[1] spec.allow.node_labels.env: "
        "'^(prod' is not a valid regular expression (line 16)"
    )


# -- envelope ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"apiVersion": "v1"}, "apiVersion: expected 'limen.dev/v1alpha1', got 'v1'"),
        ({"apiVersion": None}, "apiVersion: required field is missing (use limen.dev/v1alpha1)"),
        ({"kind": "Widget"}, "kind: unknown kind 'Widget' (expected one of User, Role, "
                             "TrustedCluster, Resource, Cluster, Lock, OIDCConnector, "
                             "GitHubConnector)"),
        ({"kind": "Token"}, "kind: Token objects are internal and cannot be declared"),
        ({"kind": ["Role"]}, "kind: unknown kind a list (expected one of User, Role, "
                             "TrustedCluster, Resource, Cluster, Lock, OIDCConnector, "
                             "GitHubConnector)"),
        ({"kind": None}, "kind: required field is missing (one of User, Role, TrustedCluster, "
                         "Resource, Cluster, Lock, OIDCConnector, GitHubConnector)"),
        ({"metadata": None}, "metadata: required field is missing"),
        ({"metadata": ["dev"]}, "metadata: expected a mapping, got a list"),
        ({"metadata": {"labels": {}}}, "metadata.name: required field is missing"),
        ({"metadata": {"name": 7}}, "metadata.name: expected a string, got 7"),
        ({"metadata": {"name": "Dev Team"}},
         "metadata.name: 'Dev Team' is not a valid name (lowercase letters, digits, '.', '-', "
         "'_' and '@', starting and ending with a letter or digit, at most 253 characters)"),
        ({"metadata": {"name": "dev", "labels": {"env": 1}}},
         "metadata.labels.env: expected a string, got 1 (quote it)"),
        ({"metadata": {"name": "dev", "labels": {"env": "dev team"}}},
         "metadata.labels.env: 'dev team' is not a valid label value (at most 63 letters, "
         "digits, '-', '_', '.')"),
        ({"metadata": {"name": "dev", "labels": {"bad key": "x"}}},
         'metadata.labels["bad key"]: is not a valid label key ([prefix/]name, the name at most '
         "63 characters)"),
        ({"metadata": {"name": "dev", "annotations": {"n": ["x"]}}},
         "metadata.annotations.n: expected a string, got a list (quote it)"),
        ({"specs": {}}, "specs: unknown field (did you mean 'spec'?)"),
        ({"spec": None}, "spec: required field is missing"),
    ],
)
def test_envelope_errors(changes: dict[str, Any], expected: str) -> None:
    data = yaml.safe_load(role({"allow": {"logins": ["a"]}}))
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    assert messages(yaml.safe_dump(data)) == [f"roles/dev.yaml[0] {expected}"]


# -- schema ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "changes", "expected"),
    [
        (Kind.ROLE, {"options": {"forward_agnet": True}},
         "spec.options.forward_agnet: unknown field (did you mean 'forward_agent'?)"),
        (Kind.ROLE, {"options": {"forward_agent": "no"}},
         "spec.options.forward_agent: expected a boolean (true or false), got 'no'"),
        (Kind.ROLE, {"options": {"lock": "sometimes"}},
         "spec.options.lock: 'sometimes' is not one of: strict, best_effort"),
        (Kind.ROLE, {"options": {"max_sessions": -1}},
         "spec.options.max_sessions: must be at least 0"),
        (Kind.ROLE, {"allow": {"logins": "ubuntu"}},
         "spec.allow.logins: expected a list, got 'ubuntu'"),
        (Kind.ROLE, {"allow": {"rules": [{"resources": ["role"], "verbs": []}]}},
         "spec.allow.rules[0].verbs: must not be empty"),
        (Kind.USER, {"second_factor": "off"}, "spec.second_factor: unknown field"),
        (Kind.USER, {"traits": {"logins": "alice"}},
         "spec.traits.logins: expected a list, got 'alice'"),
        (Kind.TRUSTED_CLUSTER, {"proxy_address": "proxy.example"},
         "spec.proxy_address: 'proxy.example' is not valid here: The root proxy's web/API "
         "address, host:port."),
        (Kind.TRUSTED_CLUSTER, {"role_map": [{"remote": "dev", "local": []}]},
         "spec.role_map[0].local: must not be empty"),
        (Kind.TRUSTED_CLUSTER, {"role_map": [{"remote": "dev"}]},
         "spec.role_map[0].local: required field is missing"),
        (Kind.TRUSTED_CLUSTER, {"token_secret_ref": {"file": "a", "env": "LIMEN_SECRET_B"}},
         "spec.token_secret_ref: set exactly one of {file} | {env} | {secret, key}"),
        (Kind.TRUSTED_CLUSTER, {"token_secret_ref": {"secret": "s"}},
         "spec.token_secret_ref: set exactly one of {file} | {env} | {secret, key}"),
        (Kind.TRUSTED_CLUSTER, {"token_secret_ref": {"file": "a", "path": "/b"}},
         "spec.token_secret_ref.path: unknown field"),
        (Kind.TRUSTED_CLUSTER, {"ca_pin": "abc"},
         "spec.ca_pin: 'abc' is not valid here: Expected SHA-256 fingerprint of the root's TLS "
         "CA: sha256:<64 hex digits>."),
        (Kind.RESOURCE, {"kind": "ftp"}, "spec.kind: 'ftp' is not one of: ssh, db, kube, app"),
        (Kind.CLUSTER, {"proxy": {"service_type": "Ingress"}},
         "spec.proxy.service_type: 'Ingress' is not one of: ClusterIP, NodePort, LoadBalancer"),
        (Kind.CLUSTER, {"auth": {"replicas": 0}}, "spec.auth.replicas: must be at least 1"),
    ],
)
def test_schema_errors(kind: Kind, changes: dict[str, Any], expected: str) -> None:
    assert messages(document(kind, changes)) == [f"roles/dev.yaml[0] {expected}"]


def test_trusted_cluster_without_token_secret_ref() -> None:
    data = yaml.safe_load(VALID[Kind.TRUSTED_CLUSTER])
    del data["spec"]["token_secret_ref"]
    assert messages(yaml.safe_dump(data), "leaf/org-a.yaml") == [
        "leaf/org-a.yaml[0] spec.token_secret_ref: required field is missing"
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("8 hours", "'8 hours' is not a valid duration (use a number and a unit: 8h, 30m, "
                    "1h30m, 90s)"),
        ("0s", "'0s' is not a positive duration"),
        ("0h0m", "'0h0m' is not a positive duration"),
        ("-1h", "'-1h' is not a valid duration (use a number and a unit: 8h, 30m, 1h30m, 90s)"),
    ],
)
def test_duration_fields(value: str, reason: str) -> None:
    assert messages(role({"options": {"max_session_ttl": value}})) == [
        f"roles/dev.yaml[0] spec.options.max_session_ttl: {reason}"
    ]


# -- semantics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "expected"),
    [
        ({"node_labels": {"env": "^(prod"}},
         "spec.allow.node_labels.env: '^(prod' is not a valid regular expression"),
        ({"node_labels": {"env": ["dev", "^[a-$"]}},
         "spec.allow.node_labels.env[1]: '^[a-$' is not a valid regular expression"),
        ({"db_labels": {"env": "^prod"}},
         "spec.allow.db_labels.env: '^prod' looks like a regular expression but is not "
         "anchored: write ^...$"),
        ({"app_labels": {"env": 3}},
         "spec.allow.app_labels.env: expected a string or a list of strings, got 3"),
        ({"cluster_labels": {"env": {"a": "b"}}},
         "spec.allow.cluster_labels.env: expected a string or a list of strings, got a mapping"),
        ({"kubernetes_labels": {"env": ["dev", True]}},
         "spec.allow.kubernetes_labels.env[1]: expected a string, got True"),
        ({"logins": ["{{internal.logins"]},
         "spec.allow.logins[0]: '{{internal.logins' is not a valid trait template: missing "
         "closing '}}'"),
        ({"db_users": ["{{email.remote(external.email)}}"]},
         "spec.allow.db_users[0]: '{{email.remote(external.email)}}' is not a valid trait "
         "template: unknown function 'email.remote' (known: email.local, regexp.replace)"),
        ({"node_labels": {"team": "{{foo.team}}"}},
         "spec.allow.node_labels.team: '{{foo.team}}' is not a valid trait template: unknown "
         "namespace 'foo' (use internal.NAME, external.NAME or one of the functions "
         "email.local, regexp.replace)"),
        ({"kubernetes_resources": [{"kind": "pod", "name": "^api-(.*$"}]},
         "spec.allow.kubernetes_resources[0].name: '^api-(.*$' is not a valid regular "
         "expression"),
    ],
)
def test_role_semantic_errors(allow: dict[str, Any], expected: str) -> None:
    assert messages(role({"allow": allow})) == [f"roles/dev.yaml[0] {expected}"]
    deny_expected = expected.replace("spec.allow.", "spec.deny.")
    assert messages(role({"deny": allow})) == [f"roles/dev.yaml[0] {deny_expected}"]


def test_template_inside_an_anchored_regexp_is_accepted() -> None:
    validate(doc(role({"allow": {"node_labels": {"team": "^{{external.team}}-(a|b)$"}}})))


def test_role_map_regexp() -> None:
    assert messages(document(Kind.TRUSTED_CLUSTER, {"role_map": [
        {"remote": "dev", "local": ["visitor"]},
        {"remote": "^admin-(.*$", "local": ["ops-$1"]},
    ]})) == ["roles/dev.yaml[0] spec.role_map[1].remote: '^admin-(.*$' is not a valid regular "
             "expression"]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"protocol": None}, ["spec.protocol: required for kind db"]),
        ({"kind": "app", "protocol": None, "database": None},
         ["spec.uri: required for kind app"]),
        ({"hostname": "db1"}, ["spec.hostname: only applies to kind ssh, not db"]),
        ({"kind": "ssh", "protocol": None, "database": "x"},
         ["spec.database: only applies to kind db, not ssh"]),
        ({"kubeconfig_ref": {"file": "k"}},
         ["spec.kubeconfig_ref: only applies to kind kube, not db"]),
        ({"mysql": {"allow_local_infile": True}},
         ["spec.mysql: only applies to a db resource with protocol mysql"]),
        ({"protocol": "mysql", "mysql": {"allow_local_infile": "yes"}},
         ["spec.mysql.allow_local_infile: expected a boolean (true or false), got 'yes'"]),
    ],
)
def test_resource_kind_specific_fields(changes: dict[str, Any], expected: list[str]) -> None:
    data = yaml.safe_load(VALID[Kind.RESOURCE])
    for key, value in changes.items():
        if value is None:
            data["spec"].pop(key, None)
        else:
            data["spec"][key] = value
    assert messages(yaml.safe_dump(data)) == [f"roles/dev.yaml[0] {e}" for e in expected]


def test_resource_kinds_with_their_own_fields_pass() -> None:
    texts = [
        {"kind": "ssh", "address": "10.0.0.5:22", "hostname": "web1"},
        {"kind": "app", "uri": "http://grafana.internal:3000", "public_addr": "grafana.example"},
        {"kind": "kube", "kubeconfig_ref": {"secret": "kc", "key": "config"}},
        {"kind": "db", "protocol": "mysql", "address": "10.0.0.7:3306",
         "mysql": {"allow_local_infile": True}},
    ]
    for position, spec in enumerate(texts):
        validate(doc(yaml.safe_dump({"apiVersion": "limen.dev/v1alpha1", "kind": "Resource",
                                     "metadata": {"name": f"r{position}"}, "spec": spec})))


def test_postgres_backend_needs_a_dsn_reference() -> None:
    assert messages(document(Kind.CLUSTER, {"backend": {"type": "postgres"}})) == [
        "roles/dev.yaml[0] spec.backend.dsn_secret_ref: required for a postgres backend"
    ]
    validate(doc(document(Kind.CLUSTER, {"backend": {"type": "sqlite"}})))


# -- secrets -----------------------------------------------------------------------------------

PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


@pytest.mark.parametrize(
    ("kind", "changes", "path"),
    [
        (Kind.USER, {"password": "hunter2"}, "spec.password"),
        (Kind.USER, {"traits": {"api_key": ["abc123"]}}, "spec.traits.api_key"),
        (Kind.TRUSTED_CLUSTER, {"token": "abcdef0123"}, "spec.token"),
        (Kind.RESOURCE, {"description": PEM}, "spec.description"),
        (Kind.CLUSTER, {"gitops": {"repo": "r", "credentials_ref": {"file": PEM}}},
         "spec.gitops.credentials_ref.file"),
    ],
)
def test_literal_secrets_are_rejected(kind: Kind, changes: dict[str, Any], path: str) -> None:
    assert messages(document(kind, changes)) == [f"roles/dev.yaml[0] {path}: {SECRET_HINT}"]


def test_private_key_in_metadata_is_rejected() -> None:
    data = yaml.safe_load(VALID[Kind.ROLE])
    data["metadata"]["annotations"] = {"backup": PEM}
    assert messages(yaml.safe_dump(data)) == [
        f"roles/dev.yaml[0] metadata.annotations.backup: {SECRET_HINT}"
    ]


def test_references_and_secret_like_labels_are_not_secrets() -> None:
    data = yaml.safe_load(VALID[Kind.TRUSTED_CLUSTER])
    data["spec"]["token_secret_ref"] = {"secret": "org-a-token", "key": "token"}
    data["metadata"]["labels"] = {"secret": "true"}
    validate(doc(yaml.safe_dump(data)))
    validate(doc(role({"allow": {"node_labels": {"secret": "x"}}})))
    validate(doc(document(Kind.USER, {"traits": {"token": []}})))


# -- batches -----------------------------------------------------------------------------------


def test_one_bad_document_among_good_ones(tmp_path: Path) -> None:
    for kind, text in VALID.items():
        (tmp_path / f"{kind.plural}.yaml").write_text(text)
    (tmp_path / "roles.yaml").write_text(
        VALID[Kind.ROLE] + "---\n" + role({"allow": {"logins": ["{{internal.logins"]}}, "broken")
    )
    with pytest.raises(ValidationFailed) as caught:
        validate(load_path(tmp_path))
    [error] = caught.value.errors
    assert (error.source, error.index, error.path) == ("roles.yaml", 1, "spec.allow.logins[0]")
    assert str(caught.value) == str(error)


def test_every_error_of_every_document_is_listed() -> None:
    text = (role({"allow": {"node_labels": {"a": "^(x"}, "logins": "x"}}, "a") + "---\n"
            + role({"options": {"max_session_ttl": "8 hours"}}, "b"))
    assert messages(text) == [
        "roles/dev.yaml[0] spec.allow.logins: expected a list, got 'x'",
        "roles/dev.yaml[0] spec.allow.node_labels.a: '^(x' is not a valid regular expression",
        "roles/dev.yaml[1] spec.options.max_session_ttl: '8 hours' is not a valid duration "
        "(use a number and a unit: 8h, 30m, 1h30m, 90s)",
    ]


def test_duplicate_kind_and_name_in_one_batch(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(role({}, "dev"))
    (tmp_path / "b.yaml").write_text("# the same role again\n" + role({}, "dev")
                                     + "---\n" + document(Kind.USER, metadata={"name": "dev"}))
    with pytest.raises(ValidationFailed) as caught:
        validate(load_path(tmp_path))
    [error] = caught.value.errors
    assert (error.source, error.index, error.path, error.line) == ("b.yaml", 0, "metadata.name", 5)
    assert error.reason == "duplicate Role/dev: already declared in a.yaml[0] (line 1)"


def test_validate_does_not_modify_its_input() -> None:
    docs = doc(VALID[Kind.CLUSTER] + "---\n" + role({"deny": None}))
    before = copy.deepcopy([d.data for d in docs])
    validate(docs)
    assert [d.data for d in docs] == before


def test_empty_batch_is_valid() -> None:
    assert validate([]) == []


# -- robustness -------------------------------------------------------------------------------

KEYS = st.sampled_from([
    "spec", "kind", "allow", "deny", "options", "node_labels", "logins", "roles", "traits",
    "role_map", "remote", "local", "token_secret_ref", "file", "password", "max_session_ttl",
    "backend", "type", "address", "protocol", "rules", "name", "labels", "x",
])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.sampled_from(["^(x", "{{internal.a", "8h", "8 hours", "db", "postgres", "a:1", ""])
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        KEYS | st.integers(), children, max_size=4
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["User", "Role", "TrustedCluster", "Resource", "Cluster", ["x"], None]),
    metadata=VALUES,
    spec=VALUES,
)
def test_arbitrary_documents_fail_cleanly(kind: Any, metadata: Any, spec: Any) -> None:
    data = {"apiVersion": "limen.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec}
    source = SourceDocument("fuzz.yaml", 0, 1, data)
    errors = []
    try:
        validate([source])
    except ValidationFailed as failed:
        errors = failed.errors
        assert errors
    assert all(e.source == "fuzz.yaml" and e.reason for e in errors)


# -- helpers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8h", timedelta(hours=8)),
        ("30m", timedelta(minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("2h0m0s", timedelta(hours=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["8 hours", "8", "", "1d", "-5m", "0s", "h", "1h-", " 8h", "8h "])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(BadParameter, match="duration"):
        parse_duration(text)


def test_parse_duration_rejects_absurd_lengths() -> None:
    with pytest.raises(BadParameter, match="too long a duration"):
        parse_duration("9" * 30 + "h")


def test_format_path() -> None:
    assert format_path(("spec", "role_map", 1, "remote")) == "spec.role_map[1].remote"
    assert format_path(("metadata", "labels", "limen.dev/origin")) == (
        'metadata.labels["limen.dev/origin"]'
    )
    assert format_path(("spec", "allow", "node_labels", "*")) == "spec.allow.node_labels.*"
    assert format_path(()) == ""
