"""The self reviews: ``kubectl auth whoami`` (SelfSubjectReview) and ``kubectl auth can-i``
(SelfSubjectAccessReview), answered for the user a request acts as (after impersonation).

Used by ``apiserver.py`` for ``POST /apis/authentication.k8s.io/v1/selfsubjectreviews`` and
``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews``; neither is stored. The
access review asks the emulator's authorizer the question in ``spec.resourceAttributes`` or
``spec.nonResourceAttributes``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .errors import ApiError
from .requestinfo import Attributes
from .users import UserInfo

__all__ = ["self_subject_access_review", "self_subject_review"]


def self_subject_review(user: UserInfo) -> dict[str, Any]:
    return {
        "kind": "SelfSubjectReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": user.as_json()},
    }


def self_subject_access_review(
    user: UserInfo, body: Any, allowed: Callable[[Attributes], bool]
) -> dict[str, Any]:
    spec = body.get("spec") if isinstance(body, Mapping) else None
    if not isinstance(spec, Mapping):
        raise ApiError.bad_request("spec is required")
    resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if isinstance(resource, Mapping) == isinstance(non_resource, Mapping):
        raise ApiError.invalid(
            "SelfSubjectAccessReview",
            "",
            "spec: Invalid value: exactly one of nonResourceAttributes or "
            "resourceAttributes must be specified",
        )
    if isinstance(resource, Mapping):
        question = Attributes(
            user=user,
            verb=str(resource.get("verb") or ""),
            resource_request=True,
            api_group=str(resource.get("group") or ""),
            api_version=str(resource.get("version") or ""),
            resource=str(resource.get("resource") or ""),
            subresource=str(resource.get("subresource") or ""),
            namespace=str(resource.get("namespace") or ""),
            name=str(resource.get("name") or ""),
        )
    else:
        assert isinstance(non_resource, Mapping)
        question = Attributes(
            user=user,
            verb=str(non_resource.get("verb") or ""),
            resource_request=False,
            path=str(non_resource.get("path") or ""),
        )
    return {
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": dict(spec),
        "status": {"allowed": allowed(question)},
    }
