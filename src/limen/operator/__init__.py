"""limen.operator: the Kubernetes operator (``limen operator``, or ``kopf run -m limen.operator``).

Pushes User, Role, TrustedCluster and Resource custom resources into Limen's auth API (origin
``kubernetes``) and deploys Clusters::

    kubectl / Argo CD / Flux ──▶ API server ──watch──▶ kopf ──▶ resources.py ──mTLS──▶ auth
                                                           └──▶ cluster.py ──▶ Deployments,
                                                                Services, CA Secret, ConfigMap

Modules: ``settings`` (config, branded kopf settings), ``naming`` (Limen names), ``conditions``
(metav1.Condition status), ``documents`` (CR → Limen document, ownership, drift), ``auth``
(auth API calls with deadlines), ``resources`` / ``cluster`` (handlers), ``cluster_builders``
(owned objects), ``cluster_backend`` (SQLite or PostgreSQL: the DSN and CA key Secrets),
``availability`` (PodDisruptionBudgets, anti-affinity, auth's readiness probe), ``db_agent``
(the db agents), ``ca_secret`` (the CA Secret, seeding, operator identity), ``kube``
(Kubernetes API in threads), ``kopf_session`` (kopf's session, its connections ended at exit),
``context`` (shared state, timers at shutdown), ``main`` (assembly).

Importing this package builds ``registry`` from ``LIMEN_OPERATOR_*`` variables and makes it
kopf's default registry: that is what ``kopf run -m limen.operator`` runs. ``limen operator``
and the tests build their own registry with ``main.build_registry``.
"""

from __future__ import annotations

import kopf

from limen.operator.main import build_context, build_registry, run
from limen.operator.settings import OperatorConfig

__all__ = ["OperatorConfig", "build_context", "build_registry", "registry", "run"]

registry: kopf.OperatorRegistry = build_registry(build_context(OperatorConfig.from_env()))
kopf.set_default_registry(registry)
