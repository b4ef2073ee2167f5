"""Loading the user's key and certificate into a running ``ssh-agent`` (``SSH_AUTH_SOCK``).

Called by ``lmsh login`` (add, with the certificate's lifetime) and ``lmsh logout`` (remove).
Without an agent these are no-ops that say so.
"""

from __future__ import annotations

import os

import asyncssh

__all__ = ["add_to_agent", "remove_from_agent"]


async def add_to_agent(private_key: bytes, ssh_cert: bytes, lifetime_seconds: int) -> bool:
    """Add key+certificate for ``lifetime_seconds``; False when no agent is running."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return False
    key = asyncssh.import_private_key(private_key)
    cert = asyncssh.import_certificate(ssh_cert)
    try:
        async with asyncssh.connect_agent() as agent:
            await agent.add_keys([(key, cert)], lifetime=max(1, lifetime_seconds))
    except (OSError, asyncssh.Error):
        return False
    return True


async def remove_from_agent(private_key: bytes, ssh_cert: bytes | None) -> bool:
    """Remove the key (and its certificate) from the agent; False when none runs or absent."""
    if not os.environ.get("SSH_AUTH_SOCK"):
        return False
    public = asyncssh.import_private_key(private_key).convert_to_public().export_public_key()
    cert_blob = asyncssh.import_certificate(ssh_cert).public_data if ssh_cert else None
    removed = False
    try:
        async with asyncssh.connect_agent() as agent:
            for agent_key in await agent.get_keys():
                blob = agent_key.public_data
                if (cert_blob is not None and blob == cert_blob) or \
                        asyncssh.import_public_key(public).public_data == blob:
                    await agent.remove_keys([agent_key])
                    removed = True
    except (OSError, asyncssh.Error):
        return False
    return removed
