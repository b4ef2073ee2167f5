"""Network plumbing shared by auth, proxy, agents and client.

Modules::

    http        HTTPS JSON APIs: the server's error mapping, the typed client
    json_limits bounded JSON parsing
    address     ``host:port`` parsing, binding
    tcp         tune_socket: TCP_NODELAY and TCP_QUICKACK on every TCP socket
    relay       the byte pump joining two streams (asyncio Protocols), EOF and idle rules
    sshalgs     the hardened SSH algorithm sets and packet size of every Limen SSH endpoint
    sshserver   the public-key-only asyncssh server base
"""
