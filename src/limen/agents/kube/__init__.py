"""The kube agent: serves Kubernetes clusters' API servers through its reverse tunnel.

``catalog`` (which clusters), ``upstream`` (how it reaches each API server: a kubeconfig or
the in-cluster service account), ``http1`` (the HTTP/1.1 framing it reads from the proxy),
``session`` (a connection's user, the per-request decision and audit), ``forwarder`` (one
request to the API server with impersonation, streamed back; upgrades passed through),
``exec_recording`` (interactive exec/attach as asciicast, read off copies of the relayed bytes
by ``exec_streams`` over ``ws_frames`` or the SPDY/3.1 codec ``spdy``) and ``kube_service``
(the tunnel, the data connections' mutual TLS, the request loop). Started by
``limen.cli.compose`` / ``limen.cli.compose_remote``.
"""
