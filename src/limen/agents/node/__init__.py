"""The node agent: an SSH server (asyncssh) next to the server it gives shells on.

It authenticates Limen user certificates, decides every session and forwarding request with
RBAC for its own labels and the requested login, runs shells, commands, scp and SFTP as the
Unix user (PTY, signals, window size, exit status), records interactive sessions as asciicast
v2 and audits everything. Reached directly (:meth:`NodeSSHServer.listen`) or through the
reverse tunnel (:meth:`NodeSSHServer.handle_socket`).

Modules, outside in::

    server       NodeSSHServer: listeners, tunnel sockets, start (recording recovery), close
    connection   per connection: certificate auth, RBAC per request, forwarding, timers
    session      per session channel: spawn, relay, recording, audit
    transfers    SFTP request codec and scp command parsing (pure) for file audit events
    process      processes as the user (setsid, setuid/setgid, groups): base and pipes
    pty          processes on a PTY (TIOCSCTTY, output drain after exit)
    ptymodes     terminal modes and window size
    unixuser     accounts, who the agent may run as, the login environment
    certauth     the user-certificate check (pure)
    policy       AccessPolicy seam, StoreAccessPolicy (RBAC over the resource store)
    context      shared state, ordered audit queue
    config       NodeServerConfig, asyncssh options
"""

from limen.agents.node.certauth import VerifiedUser, authenticate_key
from limen.agents.node.config import DEFAULT_CIPHERS, NodeServerConfig, server_options
from limen.agents.node.policy import AccessPolicy, StoreAccessPolicy
from limen.agents.node.ssh_server import NodeSSHServer, find_sftp_server
from limen.agents.node.unixuser import SessionEnv, UnixUser, login_environment, lookup_user

__all__ = [
    "DEFAULT_CIPHERS",
    "AccessPolicy",
    "NodeSSHServer",
    "NodeServerConfig",
    "SessionEnv",
    "StoreAccessPolicy",
    "UnixUser",
    "VerifiedUser",
    "authenticate_key",
    "find_sftp_server",
    "login_environment",
    "lookup_user",
    "server_options",
]
