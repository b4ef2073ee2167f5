"""Single sign-on at auth: logins through an OpenID Connect provider (``OIDCConnector``) or
GitHub (``GitHubConnector``), from lmsh or the web UI.

``provider`` talks to the provider (discovery, JWKS, the token endpoint), ``pending`` keeps the
logins started and not yet finished (state, nonce, PKCE verifier, the client's key, the kind
and the client that started it), ``id_token`` verifies what the provider answers, ``claims``
turns claims into a user name, roles and traits, and ``oidc``
(:class:`~limen.auth.sso.oidc.OIDCLogins`) is the flow the auth API's ``/v1/sso/oidc/...``
routes call (``limen.auth.http.sso``). For GitHub, ``github_api`` talks to GitHub (code
exchange, ``/user``, ``/user/teams``), ``github_identity`` turns its answers into a name, roles
and traits, and ``github`` (:class:`~limen.auth.sso.github.GitHubLogins`) is the flow of
``/v1/sso/github/...``. ``issue`` is what both share: the redirect, the web UI's key check,
the certificates and the refusals' audit. See docs/sso.md.
"""
