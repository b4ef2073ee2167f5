"""The proxy's Kubernetes front: ``kube_route`` (the client certificate, the online cluster
it is scoped to, the cluster-level decision, the data connection to a kube agent) and
``kube_front`` (the ``kube`` listener and the web port's kube routes: TLS with the user's
kube certificate, then the client's HTTP/1.1 relayed to the agent, which decides every
request). Started by ``limen.cli.proxy_component``.
"""
