"""The Kubernetes API emulator behaves like kube-apiserver: each test names the real-server
behaviour it checks, over HTTPS with the fixture's CA (``kube_api.request``) or its watch stream.

Client-level proofs (kubectl, the ``kubernetes`` client, kopf, throughput) are in
``test_apiserver_clients.py``.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import ssl
import time
from typing import Any

import pytest
import yaml

from k8s_emulator.fixtures import ApiError, KubeAPI

ROLES = "/apis/limen.dev/v1alpha1/namespaces/default/roles"


def role(name: str, labels: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"labels": labels} if labels else {})}
    meta.update(extra.pop("metadata", {}))
    return {
        "apiVersion": "limen.dev/v1alpha1",
        "kind": "Role",
        "metadata": meta,
        "spec": {"allow": {"logins": ["root"]}},
        **extra,
    }


def owner_ref(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
    }


def watch(
    api: KubeAPI, path: str, *, count: int | None = None, timeout: float = 5.0
) -> list[dict[str, Any]]:
    """Read ``count`` events from a watch stream (or until the server ends it)."""
    context = ssl.create_default_context(cafile=str(api.ca_file))
    connection = http.client.HTTPSConnection(
        api.url.removeprefix("https://"), context=context, timeout=timeout
    )
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        events: list[dict[str, Any]] = []
        while count is None or len(events) < count:
            line = response.readline()
            if not line:
                break
            events.append(json.loads(line))
        return events
    finally:
        connection.close()


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


def test_create_assigns_server_metadata_and_answers_201(kube_api: KubeAPI) -> None:
    status, first = kube_api.request("POST", ROLES, role("a"))
    assert status == 201
    meta = first["metadata"]
    assert isinstance(meta["resourceVersion"], str)
    assert meta["resourceVersion"].isdigit()
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["generation"] == 1
    assert meta["namespace"] == "default"
    status, secret = kube_api.request(
        "POST",
        "/api/v1/namespaces/default/secrets",
        {"metadata": {"name": "s"}, "stringData": {"k": "v"}},
    )
    assert status == 201
    # one global counter across types; stringData is stored base64-encoded in data
    assert int(secret["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert secret["data"] == {"k": "dg=="}
    assert "stringData" not in secret
    assert kube_api.request("POST", ROLES, role("a"))[1]["reason"] == "AlreadyExists"
    status, body = kube_api.request("POST", ROLES, role("a", metadata={"resourceVersion": "5"}))
    assert status == 500
    assert "should not be set" in body["message"]


def test_get_and_list_answer_like_the_api_server(kube_api: KubeAPI) -> None:
    for name in ("b", "a"):
        kube_api.request("POST", ROLES, role(name))
    status, listed = kube_api.request("GET", ROLES)
    assert status == 200
    assert listed["kind"] == "RoleList"
    assert listed["apiVersion"] == "limen.dev/v1alpha1"
    assert listed["metadata"]["resourceVersion"] == max(
        i["metadata"]["resourceVersion"] for i in listed["items"]
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a", "b"]  # sorted like etcd keys
    assert all(
        i["kind"] == "Role" and i["apiVersion"] == "limen.dev/v1alpha1" for i in listed["items"]
    )
    status, page = kube_api.request("GET", ROLES + "?limit=1")
    assert [i["metadata"]["name"] for i in page["items"]] == ["a"]
    assert page["metadata"]["remainingItemCount"] == 1
    status, rest = kube_api.request(
        "GET", f"{ROLES}?limit=1&continue={page['metadata']['continue']}"
    )
    assert [i["metadata"]["name"] for i in rest["items"]] == ["b"]
    assert "continue" not in rest["metadata"]
    status, every = kube_api.request("GET", "/apis/limen.dev/v1alpha1/roles")  # all namespaces
    assert len(every["items"]) == 2
    status, missing = kube_api.request("GET", ROLES + "/nope")
    assert status == 404
    assert missing == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'roles.limen.dev "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "group": "limen.dev", "kind": "roles"},
        "code": 404,
    }
    assert kube_api.request("GET", "/apis/limen.dev/v1alpha1/namespaces/default/nothings")[0] == 404


def test_generation_counts_spec_changes_only(kube_api: KubeAPI) -> None:
    kube_api.request("POST", ROLES, role("g"))
    merge = "application/merge-patch+json"
    _, obj = kube_api.request(
        "PATCH", ROLES + "/g", {"spec": {"allow": {"logins": ["a"]}}}, content_type=merge
    )
    assert obj["metadata"]["generation"] == 2
    _, obj = kube_api.request(
        "PATCH", ROLES + "/g", {"metadata": {"labels": {"x": "y"}}}, content_type=merge
    )
    assert obj["metadata"]["generation"] == 2
    assert obj["metadata"]["labels"] == {"x": "y"}
    _, obj = kube_api.request(
        "PATCH", ROLES + "/g/status", {"status": {"observedGeneration": 2}}, content_type=merge
    )
    assert obj["metadata"]["generation"] == 2
    assert obj["status"] == {"observedGeneration": 2}
    rv = obj["metadata"]["resourceVersion"]
    # a no-op patch changes nothing, not even the resourceVersion
    _, obj = kube_api.request(
        "PATCH", ROLES + "/g", {"metadata": {"labels": {"x": "y"}}}, content_type=merge
    )
    assert obj["metadata"]["resourceVersion"] == rv


def test_put_replaces_with_optimistic_concurrency(kube_api: KubeAPI) -> None:
    _, created = kube_api.request("POST", ROLES, role("p"))
    replacement = role("p", metadata={"resourceVersion": created["metadata"]["resourceVersion"]})
    replacement["spec"] = {"deny": {"logins": ["root"]}}
    status, replaced = kube_api.request("PUT", ROLES + "/p", replacement)
    assert status == 200
    assert replaced["spec"] == {"deny": {"logins": ["root"]}}
    assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
    assert replaced["metadata"]["generation"] == 2
    assert int(replaced["metadata"]["resourceVersion"]) > int(
        created["metadata"]["resourceVersion"]
    )
    status, conflict = kube_api.request("PUT", ROLES + "/p", replacement)  # stale resourceVersion
    assert status == 409
    assert conflict["reason"] == "Conflict"
    assert "the object has been modified" in conflict["message"]
    status, invalid = kube_api.request("PUT", ROLES + "/p", role("p"))  # CRs need a resourceVersion
    assert status == 422
    assert invalid["reason"] == "Invalid"
    assert (
        kube_api.request("PUT", ROLES + "/other", replacement)[0] == 400
    )  # name must match the URL
    assert (
        kube_api.request("PUT", ROLES + "/nope", role("nope", metadata={"resourceVersion": "1"}))[0]
        == 404
    )


def test_patch_flavours(kube_api: KubeAPI) -> None:
    kube_api.request("POST", ROLES, role("m", labels={"a": "1", "b": "2"}))
    status, obj = kube_api.request(
        "PATCH",
        ROLES + "/m",
        {"metadata": {"labels": {"a": None, "c": "3"}}},
        content_type="application/merge-patch+json",
    )
    assert status == 200
    assert obj["metadata"]["labels"] == {"b": "2", "c": "3"}
    status, obj = kube_api.request(
        "PATCH",
        ROLES + "/m",
        {"spec": {"allow": {"logins": ["x"]}}},
        content_type="application/strategic-merge-patch+json",
    )
    assert status == 200
    assert obj["spec"]["allow"]["logins"] == ["x"]
    rv = obj["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["limen.dev/test"]},
        {"op": "add", "path": "/spec/allow/logins/-", "value": "y"},
        {"op": "replace", "path": "/metadata/labels/b", "value": "two"},
        {"op": "remove", "path": "/metadata/labels/c"},
    ]
    status, obj = kube_api.request(
        "PATCH", ROLES + "/m", ops, content_type="application/json-patch+json"
    )
    assert status == 200
    assert obj["metadata"]["finalizers"] == ["limen.dev/test"]
    assert obj["spec"]["allow"]["logins"] == ["x", "y"]
    assert obj["metadata"]["labels"] == {"b": "two"}
    # kopf's finalizer patch on a stale resourceVersion: 422, and nothing is applied
    status, failed = kube_api.request(
        "PATCH", ROLES + "/m", ops[:2], content_type="application/json-patch+json"
    )
    assert status == 422
    assert failed["reason"] == "Invalid"
    assert (
        kube_api.get("roles.limen.dev", "m")["metadata"]["resourceVersion"]
        == obj["metadata"]["resourceVersion"]
    )
    stale = {"metadata": {"resourceVersion": rv, "labels": {"z": "1"}}}
    assert (
        kube_api.request("PATCH", ROLES + "/m", stale, content_type="application/merge-patch+json")[
            0
        ]
        == 409
    )
    assert (
        kube_api.request("PATCH", ROLES + "/m", {}, content_type="application/apply-patch+yaml")[0]
        == 415
    )
    assert (
        kube_api.request("PATCH", ROLES + "/nope", {}, content_type="application/merge-patch+json")[
            0
        ]
        == 404
    )


def test_status_subresource_separates_status_from_the_rest(kube_api: KubeAPI) -> None:
    _, created = kube_api.request("POST", ROLES, role("s", status={"ignored": True}))
    assert "status" not in created  # status is dropped on create
    body = {**created, "spec": {"changed": True}, "status": {"phase": "Ready"}}
    status, obj = kube_api.request("PUT", ROLES + "/s/status", body)
    assert status == 200
    assert obj["status"] == {"phase": "Ready"}
    assert obj["spec"] == created["spec"]
    assert obj["metadata"]["generation"] == 1
    body = {**obj, "spec": {"changed": True}, "status": {"phase": "Overwritten"}}
    _, obj = kube_api.request("PUT", ROLES + "/s", body)
    assert obj["spec"] == {"changed": True}
    assert obj["status"] == {"phase": "Ready"}
    _, obj = kube_api.request(
        "PATCH",
        ROLES + "/s",
        {"status": {"phase": "X"}},
        content_type="application/merge-patch+json",
    )
    assert obj["status"] == {"phase": "Ready"}
    _, obj = kube_api.request(
        "PATCH",
        ROLES + "/s/status",
        {"status": {"phase": "Done"}, "spec": {"x": 1}},
        content_type="application/merge-patch+json",
    )
    assert obj["status"] == {"phase": "Done"}
    assert obj["spec"] == {"changed": True}
    assert kube_api.request("GET", ROLES + "/s/status")[1]["status"] == {"phase": "Done"}
    kube_api.request("POST", "/api/v1/namespaces/default/secrets", {"metadata": {"name": "x"}})
    assert kube_api.request("GET", "/api/v1/namespaces/default/secrets/x/status")[0] == 404


def test_finalizers_hold_deletion_until_removed(kube_api: KubeAPI) -> None:
    kube_api.request("POST", ROLES, role("f", metadata={"finalizers": ["limen.dev/hold"]}))
    status, deleting = kube_api.request("DELETE", ROLES + "/f")
    assert status == 200
    assert deleting["metadata"]["deletionTimestamp"]
    assert kube_api.request("GET", ROLES + "/f")[0] == 200  # still there
    rv = deleting["metadata"]["resourceVersion"]
    again = kube_api.request("DELETE", ROLES + "/f")[1]
    assert again["metadata"]["resourceVersion"] == rv  # deleting twice changes nothing
    status, body = kube_api.request(
        "PATCH",
        ROLES + "/f",
        {"metadata": {"finalizers": ["a", "limen.dev/hold"]}},
        content_type="application/merge-patch+json",
    )
    assert status == 422
    assert "no new finalizers" in body["message"]
    status, last = kube_api.request(
        "PATCH",
        ROLES + "/f",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    assert status == 200
    assert kube_api.request("GET", ROLES + "/f")[0] == 404
    kube_api.create(role("next"))
    # emptying the finalizers deletes at once: DELETED, and no MODIFIED before it
    events = watch(kube_api, f"{ROLES}?watch=true&resourceVersion={rv}", count=2)
    assert summary(events) == [("DELETED", "f"), ("ADDED", "next")]
    assert events[0]["object"]["metadata"]["resourceVersion"] == last["metadata"]["resourceVersion"]
    status, gone = kube_api.request("POST", ROLES, role("d"))
    status, gone = kube_api.request("DELETE", ROLES + "/d")
    assert status == 200
    assert gone["metadata"]["name"] == "d"
    status, body = kube_api.request("DELETE", "/api/v1/namespaces/default/secrets/none")
    assert status == 404


def test_delete_collection_honours_selectors(kube_api: KubeAPI) -> None:
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        kube_api.request("POST", ROLES, role(name, labels={"tier": tier}))
    status, deleted = kube_api.request("DELETE", ROLES + "?labelSelector=tier%3Dx")
    assert status == 200
    assert deleted["kind"] == "RoleList"
    assert sorted(i["metadata"]["name"] for i in deleted["items"]) == ["a", "b"]
    assert [r["metadata"]["name"] for r in kube_api.list("lmrole")] == ["c"]


def test_generate_name(kube_api: KubeAPI) -> None:
    body = role("", metadata={"generateName": "dev-"})
    del body["metadata"]["name"]
    names = {kube_api.request("POST", ROLES, body)[1]["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3
    assert all(re.fullmatch(r"dev-[bcdfghjklmnpqrstvwxz2456789]{5}", n) for n in names)
    del body["metadata"]["generateName"]
    assert kube_api.request("POST", ROLES, body)[0] == 422


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("env=prod", {"p1", "p2"}),
        ("env==prod", {"p1", "p2"}),
        ("env!=prod", {"d1", "n1"}),  # also objects without the label
        ("env in (prod,dev)", {"p1", "p2", "d1"}),
        ("env notin (prod)", {"d1", "n1"}),
        ("env", {"p1", "p2", "d1"}),
        ("!env", {"n1"}),
        ("env=prod,team=a", {"p1"}),
        ("env in (prod, dev),!team", {"d1"}),
    ],
)
def test_label_selectors(kube_api: KubeAPI, selector: str, expected: set[str]) -> None:
    for name, labels in (
        ("p1", {"env": "prod", "team": "a"}),
        ("p2", {"env": "prod", "team": "b"}),
        ("d1", {"env": "dev"}),
        ("n1", {"team": "a"}),
    ):
        kube_api.create(role(name, labels=labels))
    query = "?labelSelector=" + selector.replace(" ", "%20").replace("=", "%3D").replace("!", "%21")
    status, listed = kube_api.request("GET", ROLES + query.replace(",", "%2C"))
    assert status == 200
    assert {i["metadata"]["name"] for i in listed["items"]} == expected
    events = watch(kube_api, ROLES + query + "&watch=true", count=len(expected))
    assert {name for _, name in summary(events)} == expected


def test_bad_and_field_selectors(kube_api: KubeAPI) -> None:
    kube_api.create(role("one"))
    kube_api.create(role("two"))
    assert kube_api.request("GET", ROLES + "?labelSelector=a%20in%20b")[0] == 400
    _, listed = kube_api.request("GET", ROLES + "?fieldSelector=metadata.name%3Dtwo")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["two"]
    _, listed = kube_api.request("GET", ROLES + "?fieldSelector=metadata.name!%3Dtwo")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["one"]
    status, body = kube_api.request("GET", ROLES + "?fieldSelector=spec.x%3D1")
    assert status == 400
    assert "field label not supported" in body["message"]


def test_dry_run_validates_without_persisting(kube_api: KubeAPI) -> None:
    status, obj = kube_api.request("POST", ROLES + "?dryRun=All", role("dry"))
    assert status == 201
    assert obj["metadata"]["name"] == "dry"
    assert kube_api.request("GET", ROLES + "/dry")[0] == 404
    _, created = kube_api.request("POST", ROLES, role("dry"))
    assert kube_api.request("POST", ROLES + "?dryRun=All", role("dry"))[0] == 409  # still validated
    _, patched = kube_api.request(
        "PATCH",
        ROLES + "/dry?dryRun=All",
        {"spec": {"x": 1}},
        content_type="application/merge-patch+json",
    )
    assert patched["spec"]["x"] == 1
    assert "x" not in kube_api.get("lmrole", "dry")["spec"]
    assert kube_api.request("DELETE", ROLES + "/dry?dryRun=All")[0] == 200
    assert (
        kube_api.get("lmrole", "dry")["metadata"]["resourceVersion"]
        == created["metadata"]["resourceVersion"]
    )
    assert kube_api.request("POST", ROLES + "?dryRun=Yes", role("x"))[0] == 400


def test_watch_continues_from_resource_version(kube_api: KubeAPI) -> None:
    _, first = kube_api.request("POST", ROLES, role("w1"))
    kube_api.create(role("w2"))
    kube_api.patch("lmrole", "w1", {"metadata": {"labels": {"v": "2"}}})
    kube_api.delete("lmrole", "w2")
    since = first["metadata"]["resourceVersion"]
    events = watch(kube_api, f"{ROLES}?watch=true&resourceVersion={since}", count=3)
    assert summary(events) == [("ADDED", "w2"), ("MODIFIED", "w1"), ("DELETED", "w2")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)
    assert versions[0] > int(since)
    # without a resourceVersion: the current state as ADDED events first
    assert summary(watch(kube_api, ROLES + "?watch=true", count=1)) == [("ADDED", "w1")]
    # a live stream sees changes made after it opened, and ends after timeoutSeconds
    context = ssl.create_default_context(cafile=str(kube_api.ca_file))
    connection = http.client.HTTPSConnection(
        kube_api.url.removeprefix("https://"), context=context, timeout=5
    )
    started = time.monotonic()
    try:
        connection.request(
            "GET", f"{ROLES}?watch=1&timeoutSeconds=1&resourceVersion={versions[-1]}"
        )
        response = connection.getresponse()
        kube_api.create(role("w3"))
        assert summary([json.loads(response.readline())]) == [("ADDED", "w3")]
        assert response.readline() == b""  # the server ends the stream
    finally:
        connection.close()
    assert 0.9 < time.monotonic() - started < 10  # ended by timeoutSeconds=1, not by us


def test_watch_selector_transitions_and_gone(kube_api: KubeAPI) -> None:
    _, obj = kube_api.request("POST", ROLES, role("t", labels={"on": "no"}))
    since = obj["metadata"]["resourceVersion"]
    kube_api.patch("lmrole", "t", {"metadata": {"labels": {"on": "yes"}}})
    kube_api.patch("lmrole", "t", {"spec": {"x": 1}})
    kube_api.patch("lmrole", "t", {"metadata": {"labels": {"on": "no"}}})
    events = watch(
        kube_api, f"{ROLES}?watch=true&labelSelector=on%3Dyes&resourceVersion={since}", count=3
    )
    assert summary(events) == [("ADDED", "t"), ("MODIFIED", "t"), ("DELETED", "t")]
    kube_api.call(lambda store: setattr(store.watch_history, "max_events", 4))
    for i in range(6):
        kube_api.patch("lmrole", "t", {"spec": {"x": i + 2}})
    events = watch(kube_api, f"{ROLES}?watch=true&resourceVersion={since}", count=1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"


def test_watch_initial_events_end_with_a_bookmark(kube_api: KubeAPI) -> None:
    kube_api.create(role("i"))
    query = (
        "?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
        "&allowWatchBookmarks=true"
    )
    events = watch(kube_api, ROLES + query, count=2)
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_garbage_collection_follows_owner_references(kube_api: KubeAPI) -> None:
    owner, other = kube_api.create(role("owner")), kube_api.create(role("other"))
    secret = kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s1", "ownerReferences": [owner_ref(owner)]},
        }
    )
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "c1", "ownerReferences": [owner_ref(secret)]},
        }
    )
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s2", "ownerReferences": [owner_ref(owner), owner_ref(other)]},
        }
    )
    assert kube_api.delete("lmrole", "owner") is True  # Background is the default
    assert kube_api.get("secrets", "s1") is None
    assert kube_api.get("configmaps", "c1") is None
    assert kube_api.get("secrets", "s2")["metadata"]["ownerReferences"] == [owner_ref(other)]

    orphaning = kube_api.create(role("orphaning"))
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "kept", "ownerReferences": [owner_ref(orphaning)]},
        }
    )
    kube_api.delete("lmrole", "orphaning", propagation="Orphan")
    assert "ownerReferences" not in kube_api.get("secrets", "kept")["metadata"]

    fg = kube_api.create(role("fg"))
    kube_api.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "held",
                "finalizers": ["limen.dev/hold"],
                "ownerReferences": [owner_ref(fg)],
            },
        }
    )
    assert kube_api.delete("lmrole", "fg", propagation="Foreground") is False
    assert "foregroundDeletion" in kube_api.get("lmrole", "fg")["metadata"]["finalizers"]
    assert kube_api.get("secrets", "held")["metadata"]["deletionTimestamp"]
    kube_api.patch("secrets", "held", {"metadata": {"finalizers": None}})
    assert kube_api.get("secrets", "held") is None
    assert kube_api.get("lmrole", "fg") is None


def test_namespaces_must_exist_and_take_their_contents_along(kube_api: KubeAPI) -> None:
    status, body = kube_api.request(
        "POST", "/apis/limen.dev/v1alpha1/namespaces/team/roles", role("r")
    )
    assert status == 404
    assert body["message"] == 'namespaces "team" not found'
    assert kube_api.request("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})[0] == 201
    assert kube_api.get("ns", "team")["status"] == {"phase": "Active"}
    kube_api.create(role("r", metadata={"namespace": "team", "finalizers": ["limen.dev/hold"]}))
    kube_api.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team"}}
    )
    assert kube_api.request("DELETE", "/api/v1/namespaces/team")[0] == 200
    assert kube_api.get("ns", "team")["status"] == {"phase": "Terminating"}
    assert kube_api.get("configmaps", "c", "team") is None
    assert kube_api.get("lmrole", "r", "team")["metadata"]["deletionTimestamp"]
    status, body = kube_api.request(
        "POST", "/api/v1/namespaces/team/configmaps", {"metadata": {"name": "n"}}
    )
    assert status == 403
    assert "being terminated" in body["message"]
    kube_api.patch("lmrole", "r", {"metadata": {"finalizers": None}}, namespace="team")
    assert kube_api.get("ns", "team") is None


def test_cluster_scoped_crd_lifecycle(kube_api: KubeAPI) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Cluster",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                }
            ],
        },
    }
    status, created = kube_api.request(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
    )
    assert status == 201
    assert {c["type"] for c in created["status"]["conditions"]} == {"NamesAccepted", "Established"}
    resources = kube_api.request("GET", "/apis/example.com/v1")[1]["resources"]
    assert resources == [
        {
            "name": "widgets",
            "singularName": "widget",
            "namespaced": False,
            "kind": "Widget",
            "verbs": [
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        }
    ]
    status, widget = kube_api.request(
        "POST",
        "/apis/example.com/v1/widgets",
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": "default"},
            "status": {"a": 1},
        },
    )
    assert status == 201
    assert "namespace" not in widget["metadata"]
    assert widget["status"] == {"a": 1}
    # without a status subresource, status is part of the object: it bumps the generation
    _, widget = kube_api.request(
        "PATCH",
        "/apis/example.com/v1/widgets/w",
        {"status": {"a": 2}},
        content_type="application/merge-patch+json",
    )
    assert widget["metadata"]["generation"] == 2
    assert kube_api.request("GET", "/apis/example.com/v1/widgets/w/status")[0] == 404
    assert kube_api.request("GET", "/apis/example.com/v1/namespaces/default/widgets")[0] == 404
    wrong = {**crd, "metadata": {"name": "gadgets.example.com"}}
    assert (
        kube_api.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", wrong)[
            0
        ]
        == 422
    )
    status, _ = kube_api.request(
        "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
    )
    assert status == 200
    assert kube_api.request("GET", "/apis/example.com/v1")[0] == 404
    assert (
        len(kube_api.emulator.objects["example.com/v1/widgets", None, "w"].history) == 3
    )  # +deleted


def test_discovery_documents(kube_api: KubeAPI) -> None:
    api = kube_api.request("GET", "/api")[1]
    assert api["kind"] == "APIVersions"
    assert api["versions"] == ["v1"]
    assert api["serverAddressByClientCIDRs"][0]["serverAddress"] == kube_api.url.removeprefix(
        "https://"
    )
    core = kube_api.request("GET", "/api/v1")[1]
    assert core["groupVersion"] == "v1"
    core_names = {r["name"] for r in core["resources"]}
    assert {
        "namespaces",
        "namespaces/status",
        "secrets",
        "configmaps",
        "services",
        "events",
    } <= core_names
    groups = {g["name"]: g for g in kube_api.request("GET", "/apis")[1]["groups"]}
    assert {
        "limen.dev",
        "apps",
        "events.k8s.io",
        "coordination.k8s.io",
        "apiextensions.k8s.io",
    } <= set(groups)
    assert groups["limen.dev"]["preferredVersion"] == {
        "groupVersion": "limen.dev/v1alpha1",
        "version": "v1alpha1",
    }
    group = kube_api.request("GET", "/apis/limen.dev")[1]
    assert group["kind"] == "APIGroup"
    assert group["versions"] == [{"groupVersion": "limen.dev/v1alpha1", "version": "v1alpha1"}]
    limen = kube_api.request("GET", "/apis/limen.dev/v1alpha1")[1]
    assert limen["kind"] == "APIResourceList"
    assert limen["groupVersion"] == "limen.dev/v1alpha1"
    by_name = {r["name"]: r for r in limen["resources"]}
    assert set(by_name) == {
        f"{p}{s}"
        for p in ("clusters", "githubconnectors", "locks", "oidcconnectors", "resources", "roles",
                  "trustedclusters", "users")
        for s in ("", "/status")
    }
    assert by_name["roles"] == {
        "name": "roles",
        "singularName": "role",
        "namespaced": True,
        "kind": "Role",
        "verbs": [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ],
        "shortNames": ["lmrole"],
        "categories": ["limen"],
    }
    assert by_name["roles/status"]["verbs"] == ["get", "patch", "update"]
    assert any(
        r["name"] == "deployments" for r in kube_api.request("GET", "/apis/apps/v1")[1]["resources"]
    )
    assert any(
        r["name"] == "leases"
        for r in kube_api.request("GET", "/apis/coordination.k8s.io/v1")[1]["resources"]
    )
    assert kube_api.request("GET", "/apis/nothing.dev")[0] == 404
    assert kube_api.request("GET", "/version")[1]["gitVersion"].startswith("v1.")


def test_helpers_and_reactions(kube_api: KubeAPI) -> None:
    with pytest.raises(ApiError) as error:
        kube_api.create(role("x", metadata={"namespace": "missing"}))
    assert error.value.code == 404
    with pytest.raises(TimeoutError):
        kube_api.wait_for(lambda: kube_api.get("lmrole", "never"), timeout=0.2)
    # kmock reactions added by a test answer first (here: a failing /version)
    kube_api.call(lambda _: kube_api.emulator["get /version"] << 503)
    assert kube_api.request("GET", "/version")[0] == 503
    assert kube_api.request("GET", "/api")[0] == 200


def test_https_with_the_kubeconfig_ca(kube_api: KubeAPI) -> None:
    config = yaml.safe_load(kube_api.kubeconfig_path.read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == kube_api.url
    assert kube_api.url.startswith("https://127.0.0.1:")
    assert base64.b64decode(cluster["certificate-authority-data"]) == kube_api.ca_file.read_bytes()
    host, port = kube_api.url.removeprefix("https://").split(":")
    trusting = ssl.create_default_context(cafile=str(kube_api.ca_file))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        trusting.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    untrusting = ssl.create_default_context()  # the system CAs only: the self-signed CA fails
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        untrusting.wrap_socket(raw, server_hostname=host)
