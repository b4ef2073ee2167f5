"""The reverse tunnel: agents behind NAT dial out to the proxy, the proxy routes through them.

::

    agent           (node, db, ...)                              proxy
      TunnelAgent ──SSH control conn (dials out)──▶ TunnelServer (listener "tunnel")
                  ◀── dial {nonce} ────────────────     registry of connected agents
                  ── new TCP conn "LIMEN-DATA n" ──▶    paired with the dial, relayed raw
      handler(sock, request)                            (the payload is end-to-end SSH)

Modules, bottom up::

    protocol        control messages and the data preamble: pure codec, fuzzed
    nonces          single-use, expiring data-connection nonces
    registry        connected agents (host id, hostname, labels, heartbeat)
    control         proxy side of a control connection (login, hello, messages)
    sniffer         first bytes of the tunnel port: control or data connection
    server          TunnelServer: listener, pairing, dial, auth splicing
    agent_settings  TunnelAgentSettings, the dial and heartbeat callables' types
    agent_conn      one control connection of an agent: hello, welcome check, heartbeats, dials
    agent           TunnelAgent: reconnect policy (backoff), connected state, auth via the proxy
    stopping        stop_task: cancel a task until it has ended (3.11 may lose a cancel)
    pool_plan       what an agent pool does next (dial, stop, seed asleep/awake): pure
    agent_pool      TunnelAgentPool: one TunnelAgent per proxy the proxies announce

Built on ``limen.aio`` (backoff), ``limen.net`` (the relay, socket options, SSH algorithms)
and ``limen.ca.ssh_peer`` (host keys, the peer host-certificate check). Sits above
``limen.auth`` and below the proxy and the agents, which both import it.
"""

from limen.tunnel.agent import DialHandler, TunnelAgent, TunnelAgentSettings
from limen.tunnel.protocol import KIND_AUTH, KIND_NODE, MODE_RAW, MODE_TLS, DialRequest
from limen.tunnel.registry import AgentRecord, AgentRegistry
from limen.tunnel.server import DataConnection, TunnelServer

__all__ = [
    "KIND_AUTH",
    "KIND_NODE",
    "MODE_RAW",
    "MODE_TLS",
    "AgentRecord",
    "AgentRegistry",
    "DataConnection",
    "DialHandler",
    "DialRequest",
    "TunnelAgent",
    "TunnelAgentSettings",
    "TunnelServer",
]
