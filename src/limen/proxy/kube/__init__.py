"""The proxy's Kubernetes front: ``kube_route`` (the client certificate, the online cluster
it is scoped to, the cluster-level decision, the data connection to a kube agent),
``kube_front`` (the ``kube`` listener and the web port's kube routes: TLS with the user's
kube certificate, then the client's HTTP/1.1 relayed to the agent, which decides every
request), ``kube_h2`` (HTTP/2 from kubectl: each stream one HTTP/1.1 request to the agent,
with ``h2_translate``, ``h1_upstream`` and ``upstream_pool``) and ``kube_status`` (the
``Status`` answers of the front's own refusals). Started by ``limen.cli.proxy_component``.
"""
