"""Single sign-on at auth: logins through an OpenID Connect provider (``OIDCConnector``).

``provider`` talks to the provider (discovery, JWKS, the token endpoint), ``pending`` keeps the
logins started and not yet finished (state, nonce, PKCE verifier, the client's key), ``id_token``
verifies what the provider answers, ``claims`` turns claims into a user name, roles and
traits, and ``oidc`` (:class:`~limen.auth.sso.oidc.OIDCLogins`) is the flow the auth API's
``/v1/sso/oidc/...`` routes call (``limen.auth.http.sso``). See docs/sso.md.
"""
