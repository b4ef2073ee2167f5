"""The emulator's audit log: one ``audit.k8s.io/v1`` Event per request, as kube-apiserver
writes at the ``Metadata`` level, so a test can see who the API server believed it served.

Used by ``apiserver.py`` (records every request once it is answered: refused ones too, with
their 401, 403 or 500) and read by tests through ``KubeAPI.audit_events()``. ``user`` is the
authenticated requester (empty for a 401), ``impersonatedUser`` the user it acted as when
it impersonated (once the impersonation was allowed), ``objectRef`` the resource of a
resource request.
"""

from __future__ import annotations

import uuid
from typing import Any

from .pods import rfc3339
from .requestinfo import Attributes
from .users import UserInfo

__all__ = ["audit_event"]


def audit_event(
    *,
    uri: str,
    requester: UserInfo | None,
    impersonated: UserInfo | None,
    attributes: Attributes,
    code: int,
    source_ip: str,
    user_agent: str,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": str(uuid.uuid4()),
        "stage": "ResponseComplete",
        "requestURI": uri,
        "verb": attributes.verb,
        "user": requester.as_json() if requester is not None else {},
        "sourceIPs": [source_ip],
        "userAgent": user_agent,
        "responseStatus": {"metadata": {}, "code": code},
        "stageTimestamp": rfc3339(),
    }
    if impersonated is not None and impersonated != requester:
        event["impersonatedUser"] = impersonated.as_json()
    if attributes.resource_request:
        ref = {
            "resource": attributes.resource,
            "namespace": attributes.namespace,
            "name": attributes.name,
            "apiGroup": attributes.api_group,
            "apiVersion": attributes.api_version,
            "subresource": attributes.subresource,
        }
        event["objectRef"] = {k: v for k, v in ref.items() if v}
    return event
