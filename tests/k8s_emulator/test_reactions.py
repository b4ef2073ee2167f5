"""kmock reactions a test adds on ``kube_api.emulator`` answer before the emulator does, on
resource URLs too; requests kmock can parse are recorded in the handler; ``.../namespaces``
collection URLs (which kmock 0.8 cannot parse) are served by the emulator directly."""

from __future__ import annotations

from k8s_emulator.fixtures import KubeAPI

SECRETS = "/api/v1/namespaces/default/secrets"


def test_a_reaction_answers_before_the_emulator(kube_api: KubeAPI) -> None:
    assert kube_api.request("GET", SECRETS)[0] == 200  # the emulator: an empty SecretList
    kube_api.call(lambda _: kube_api.emulator[f"get {SECRETS}"] << 503)
    assert kube_api.request("GET", SECRETS)[0] == 503
    assert kube_api.request("GET", SECRETS + "/x")[0] == 404  # other URLs: still the emulator
    paths = kube_api.call(lambda _: [str(r.url.path) for r in kube_api.emulator])
    assert paths == [SECRETS, SECRETS, SECRETS + "/x"]
    assert kube_api.call(lambda _: list(kube_api.emulator.errors)) == []


def test_namespace_collections_are_served_directly(kube_api: KubeAPI) -> None:
    kube_api.call(lambda _: kube_api.emulator["get /api/v1/namespaces"] << 503)
    status, listed = kube_api.request("GET", "/api/v1/namespaces")
    assert (status, listed["kind"]) == (200, "NamespaceList")
    status, created = kube_api.request("POST", "/api/v1/namespaces", {"metadata": {"name": "t"}})
    assert (status, created["metadata"]["name"]) == (201, "t")
    assert kube_api.call(lambda _: len(kube_api.emulator)) == 0  # not recorded by kmock
