"""The proxy: the only public part of a cluster. Web API (login, sign-up, join); the SSH proxy,
reverse-tunnel server and protocol fronts come with their issues. Never imports the agents or
the operator; talks to auth only through ``limen.auth.client``.
"""
