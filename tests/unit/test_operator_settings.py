"""Branded kopf settings, the diff base that makes status-only changes invisible, and the
operator's own settings from the environment."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import kopf
import pytest

from limen.errors import BadParameter
from limen.operator.settings import (
    FINALIZER,
    LimenDiffBaseStorage,
    OperatorConfig,
    configure_kopf,
)

BODY: dict[str, Any] = {
    "apiVersion": "limen.dev/v1alpha1", "kind": "Role",
    "metadata": {"name": "dev", "namespace": "team-a", "generation": 3,
                 "resourceVersion": "100", "labels": {"env": "dev"},
                 "annotations": {"note": "x"}},
    "spec": {"allow": {"logins": ["ubuntu"]}},
    "status": {"observedGeneration": 3, "conditions": []},
}


def essence(body: dict[str, Any]) -> Any:
    return LimenDiffBaseStorage().build(body=kopf.Body(body))


def changed(edit: Any) -> bool:
    body = copy.deepcopy(BODY)
    edit(body)
    return bool(essence(body) != essence(BODY))


def test_configure_kopf_brands_everything() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings, OperatorConfig(operator_id="blue"))
    assert settings.persistence.finalizer == FINALIZER == "limen.dev/finalizer"
    progress = settings.persistence.progress_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "limen.dev"
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(diffbase, LimenDiffBaseStorage)
    assert (diffbase.prefix, diffbase.key) == ("limen.dev", "last-handled-configuration")
    assert settings.posting.reporting_component == "limen-operator"
    assert settings.posting.level == logging.WARNING
    assert settings.peering.name == "limen-blue"


def test_the_diff_base_is_written_under_limen_dev() -> None:
    patch = kopf.Patch()
    storage = LimenDiffBaseStorage()
    storage.store(body=kopf.Body(BODY), patch=patch, essence=essence(BODY))
    keys = set(patch["metadata"]["annotations"])
    assert "limen.dev/last-handled-configuration" in keys
    assert all(key.startswith("limen.dev/") for key in keys)


@pytest.mark.parametrize("edit", [
    lambda b: b["status"].update(observedGeneration=4, conditions=[{"type": "Ready"}]),
    lambda b: b["metadata"].update(resourceVersion="101"),
    lambda b: b["metadata"]["annotations"].update({"limen.dev/reconcile": "{}"}),
    lambda b: b["metadata"]["annotations"].update({"limen.dev/kopf-managed": "yes"}),
    lambda b: b["metadata"]["annotations"].update({"argocd.argoproj.io/sync-wave": "1"}),
    lambda b: b["metadata"]["annotations"].pop("note"),
], ids=["status", "resourceVersion", "kopf-progress", "kopf-marker", "argo", "other"])
def test_status_and_bookkeeping_changes_do_not_reconcile(edit: Any) -> None:
    assert not changed(edit)


@pytest.mark.parametrize("edit", [
    lambda b: b["spec"]["allow"].update(logins=["root"]),
    lambda b: b["metadata"]["labels"].update(env="prod"),
    lambda b: b["metadata"]["annotations"].update({"limen.dev/adopt": "kubernetes"}),
], ids=["spec", "label", "adopt"])
def test_what_the_operator_pushes_does_reconcile(edit: Any) -> None:
    assert changed(edit)


def test_config_from_env_and_overrides(tmp_path: Path) -> None:
    env = {"LIMEN_OPERATOR_ID": "blue", "LIMEN_AUTH_ADDRESS": "auth:3025",
           "LIMEN_OPERATOR_IDENTITY": str(tmp_path), "LIMEN_OPERATOR_RESYNC": "2m",
           "LIMEN_OPERATOR_DELETE_DEADLINE": "30"}
    config = OperatorConfig.from_env(env, retry_seconds=3.0, operator_id=None)
    assert config.operator_id == "blue"
    assert config.identity_path == tmp_path
    assert (config.resync_seconds, config.delete_deadline_seconds, config.retry_seconds) == (
        120.0, 30.0, 3.0)
    assert OperatorConfig(data_dir=tmp_path).identity_path == tmp_path / "admin"


@pytest.mark.parametrize(("env", "message"), [
    ({"LIMEN_OPERATOR_RESYNC": "soon"}, "LIMEN_OPERATOR_RESYNC"),
    ({"LIMEN_OPERATOR_RETRY": "0"}, "retry_seconds must be positive"),
    ({"LIMEN_AUTH_ADDRESS": "auth:3025"}, "identity directory"),
])
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(BadParameter, match=message):
        OperatorConfig.from_env(env)
