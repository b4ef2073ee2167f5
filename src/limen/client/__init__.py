"""The user client behind ``lmsh``: local state in ``~/.limen``, the proxy's web API, ssh-agent.

Called by ``limen.cli.lmsh``; never imports the proxy, agents or auth.
"""
