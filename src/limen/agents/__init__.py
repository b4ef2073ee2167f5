"""Limen's agents: processes that run next to protected resources, join the cluster with a
token, reach the proxy over a reverse tunnel and speak the resource's native protocol.

- :mod:`limen.agents.node` — the SSH node agent: an asyncssh server that authenticates Limen
  user certificates, applies RBAC for its labels, runs PTY shells, commands, scp and SFTP as
  the requested Unix user, records sessions (asciicast v2, :mod:`limen.recording`) and audits.

Agents never import the proxy or the operator (import-linter independence contract); the
tunnel (:mod:`limen.tunnel`) hands them connected sockets.
"""
