"""The emulator's URL parser (``paths.py``): each Kubernetes API path shape it serves, parsed
into group, version, plural, namespace, name, subresource and the legacy watch prefix; paths
that name no resource give None (the server answers 404)."""

from __future__ import annotations

import pytest

from k8s_emulator.paths import ResourcePath, parse_resource_path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/namespaces", ResourcePath(group="", version="v1", plural="namespaces")),
        (
            "/api/v1/namespaces/team",
            ResourcePath(group="", version="v1", plural="namespaces", name="team"),
        ),
        (
            "/api/v1/namespaces/team/status",
            ResourcePath(
                group="", version="v1", plural="namespaces", name="team", subresource="status"
            ),
        ),
        (
            "/api/v1/namespaces/team/secrets/s",
            ResourcePath(group="", version="v1", plural="secrets", namespace="team", name="s"),
        ),
        (
            "/apis/limen.dev/v1alpha1/namespaces/a/roles/r/status",
            ResourcePath(
                group="limen.dev",
                version="v1alpha1",
                plural="roles",
                namespace="a",
                name="r",
                subresource="status",
            ),
        ),
        (
            "/apis/limen.dev/v1alpha1/roles",
            ResourcePath(group="limen.dev", version="v1alpha1", plural="roles"),
        ),
        (
            "/apis/limen.dev/v1alpha1/watch/namespaces/a/roles",
            ResourcePath(
                group="limen.dev", version="v1alpha1", plural="roles", namespace="a", watch=True
            ),
        ),
        (
            "/apis/example.com/v1/widgets/w/scale/extra",
            ResourcePath(
                group="example.com",
                version="v1",
                plural="widgets",
                name="w",
                subresource="scale/extra",
            ),
        ),
        ("//api//v1/secrets/", ResourcePath(group="", version="v1", plural="secrets")),
    ],
)
def test_resource_paths(path: str, expected: ResourcePath) -> None:
    assert parse_resource_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/api",
        "/api/v1",
        "/apis/limen.dev",
        "/apis/limen.dev/v1alpha1",
        "/version",
        "/api/v1/watch",
        "/openapi/v2",
    ],
)
def test_paths_naming_no_resource(path: str) -> None:
    assert parse_resource_path(path) is None
