"""The operator's assembly: the explicit registry (what `limen operator` and `kopf run -m
limen.operator` run), the handlers in it, and the context built from its settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kopf
import pytest

from limen.errors import BadParameter
from limen.operator.main import build_context, build_registry
from limen.operator.settings import OPERATOR_ID_LABEL, OperatorConfig


def handler_ids(registry: kopf.OperatorRegistry) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for sub in (registry._changing, registry._spawning, registry._indexing,
                registry._watching):
        for handler in sub.get_all_handlers():
            found.setdefault(handler.selector.any_name or "", set()).add(str(handler.id))
    return found


def test_registry_holds_every_handler() -> None:
    ids = handler_ids(build_registry(build_context(OperatorConfig())))
    for plural in ("users", "roles", "trustedclusters", "resources"):
        assert ids[plural] == {"reconcile", "resync", "finalize", f"{plural}_by_limen_name"}
    assert ids["clusters"] == {"deploy", "refresh", "rotation", "forget",
                              "kube_agent_rbac"}
    assert ids["deployments"] == {"deployment_changed"}


@pytest.mark.parametrize(("operator_id", "expected"), [("", kopf.ABSENT), ("blue", "blue")])
def test_handlers_filter_by_operator_id(operator_id: str, expected: object) -> None:
    registry = build_registry(build_context(OperatorConfig(operator_id=operator_id)))
    handlers = [h for h in registry._changing.get_all_handlers()]
    assert handlers
    assert all(h.labels == {OPERATOR_ID_LABEL: expected} for h in handlers)


def test_kopf_run_module_uses_the_same_registry() -> None:
    """`kopf run -m limen.operator` imports the package: its registry is kopf's default."""
    script = ("import kopf, limen.operator as o; "
              "assert kopf.get_default_registry() is o.registry; "
              "handlers = o.registry._changing.get_all_handlers(); "
              "print(sorted({h.selector.any_name for h in handlers}))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            check=False, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "['clusters', 'githubconnectors', 'locks', 'oidcconnectors', 'resources', 'roles', "
        "'trustedclusters', 'users']")


def test_context_auth_endpoints(tmp_path: Path) -> None:
    assert build_context(OperatorConfig()).auth is None  # Clusters only
    ctx = build_context(OperatorConfig(auth_address="auth:3025", identity_dir=tmp_path))
    assert ctx.auth is not None
    assert build_context(OperatorConfig(data_dir=tmp_path)).auth is not None
    with pytest.raises(BadParameter, match="identity"):
        OperatorConfig(auth_address="auth:3025")
