"""The TLS context of a call made as the logged-in user: mutual TLS with the user's X.509
certificate from ``lmsh login``, the server required to be the proxy of a cluster whose CA was
saved at login (``limen.ca``'s checks: cryptography, any key type).

Called by :meth:`limen.client.webapi.WebApi.for_profile` (every ``lmsh`` call to the proxy's
web API) and :mod:`limen.client.proxyssh_full` (the ProxyCommand where its fast context cannot
serve).
"""

from __future__ import annotations

import ssl

from cryptography import x509

from limen.ca.identity import SystemRole
from limen.ca.keys import load_private_key
from limen.ca.peer_role import require_server_role, trust_map_from_pems
from limen.ca.tls import client_context
from limen.client.profile import Profile, ProfileStore
from limen.errors import AccessDenied

__all__ = ["profile_context"]


def profile_context(store: ProfileStore, profile: Profile) -> ssl.SSLContext:
    """The client context of ``profile``'s user for its proxy; AccessDenied when no CA of the
    proxy's cluster was saved."""
    trusted = trust_map_from_pems(store.trusted_cas(profile.proxy))
    cas = [c for certs in trusted.values() for c in certs]
    if not cas:
        raise AccessDenied("no trusted CA saved for this proxy: run lmsh login again")
    key = load_private_key(store.key_path(profile.proxy, profile.user).read_bytes())
    cert = x509.load_pem_x509_certificate(
        store.tls_cert_path(profile.proxy, profile.user).read_bytes())
    return require_server_role(client_context(cert, key, cas), SystemRole.PROXY, trusted)
