"""Which kube cluster a kubectl request goes to (``limen.proxy.kube.kube_choice``): a
certificate scoped to a kube cluster (or to a leaf's) reaches only that one, whatever the
path or server name names; one naming no kube cluster reaches whichever of this cluster's the
request names and is refused when it names none or a leaf's; a path and a server name that
disagree are refused. Pure: every refusal an AccessDenied with the reason."""

from __future__ import annotations

import pytest

from limen.ca.identity import Identity
from limen.errors import AccessDenied
from limen.net.kube_path import KubePath
from limen.proxy.kube.kube_choice import KubeChoice, Named, choose

LOCAL = "main"


def _cert(kube: str | None = None, leaf: str | None = None) -> Identity:
    return Identity("alice", LOCAL, roles=("dev",), usage=("kube",), route_to_kube=kube,
                    route_to_cluster=leaf)


def test_a_scoped_certificate_goes_to_its_cluster_when_nothing_is_named() -> None:
    assert choose(_cert("prod"), LOCAL, Named()) == KubeChoice("prod")
    assert choose(_cert("emu", "leaf"), LOCAL, Named()) == KubeChoice("emu", "leaf")
    assert choose(_cert("prod", LOCAL), LOCAL, Named()) == KubeChoice("prod")


def test_a_scoped_certificate_may_name_its_own_cluster() -> None:
    assert choose(_cert("prod"), LOCAL, Named(KubePath(LOCAL, "prod"))) == KubeChoice("prod")
    assert choose(_cert("prod"), LOCAL, Named(None, "prod")) == KubeChoice("prod")
    assert choose(_cert("emu", "leaf"), LOCAL,
                  Named(KubePath("leaf", "emu"))) == KubeChoice("emu", "leaf")


@pytest.mark.parametrize(("cert", "named"), [
    (_cert("prod"), Named(KubePath(LOCAL, "staging"))),
    (_cert("prod"), Named(None, "staging")),
    (_cert("prod"), Named(KubePath("leaf", "prod"))),
    (_cert("emu", "leaf"), Named(KubePath(LOCAL, "emu"))),
    (_cert("emu", "leaf"), Named(KubePath("other", "emu"))),
    (_cert("emu", "leaf"), Named(KubePath("leaf", "prod"))),
])
def test_a_scoped_certificate_is_refused_on_another_cluster(cert: Identity,
                                                            named: Named) -> None:
    with pytest.raises(AccessDenied, match="this certificate is for kube cluster"):
        choose(cert, LOCAL, named)


def test_a_certificate_naming_no_cluster_goes_where_the_request_names() -> None:
    assert choose(_cert(), LOCAL, Named(KubePath(LOCAL, "prod"))) == KubeChoice("prod")
    assert choose(_cert(), LOCAL, Named(KubePath(LOCAL, "staging"))) == KubeChoice("staging")
    assert choose(_cert(), LOCAL, Named(None, "staging")) == KubeChoice("staging")
    assert choose(_cert(), LOCAL, Named(KubePath(LOCAL, "x"), "x")) == KubeChoice("x")


def test_a_certificate_naming_no_cluster_needs_a_request_naming_one() -> None:
    with pytest.raises(AccessDenied, match="names no kube cluster and neither does"):
        choose(_cert(), LOCAL, Named())


def test_a_certificate_naming_no_cluster_cannot_reach_a_leaf() -> None:
    with pytest.raises(AccessDenied, match="needs a certificate routed there"):
        choose(_cert(), LOCAL, Named(KubePath("leaf", "emu")))


def test_a_path_and_a_server_name_that_disagree_are_refused() -> None:
    for cert in (_cert(), _cert("prod")):
        with pytest.raises(AccessDenied, match="but the server name names"):
            choose(cert, LOCAL, Named(KubePath(LOCAL, "prod"), "staging"))
