// The OpenID provider of the SSO tests: the certified npm package oidc-provider, on loopback.
//
//   node provider.mjs PORT [WEB_REDIRECT]   serves http://127.0.0.1:PORT as the issuer, until
//                                           killed; WEB_REDIRECT adds the client limen-web
//
// Started by the fixture in tests/integration/sso_provider.py, which waits for the discovery
// document. Clients (secrets are test values, never used anywhere else):
//   limen   native client with the loopback redirect http://127.0.0.1/callback (any port,
//           RFC 8252), client_secret_basic, PKCE S256 required
//   other   a second client with the same redirect: its ID tokens carry aud=other
//   limen-web  a web client whose redirect is WEB_REDIRECT (the proxy's web UI callback)
// Users (the dev interactions take any password; the login names the account):
//   alice   email alice@example.com, groups [eng-dev, staff]
//   bob     email bob@example.com, groups [sales]: maps to no Limen role
// ID tokens live 120 s, so a test that moves auth's clock past that sees an expired token.
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node provider.mjs PORT');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;

const users = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['eng-dev', 'staff'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob', groups: ['sales'] },
};

const webRedirect = process.argv[3];
const client = (id, redirect) => ({
  client_id: id,
  client_secret: `${id}-test-secret-0123456789abcdef`,
  application_type: redirect ? 'web' : 'native',
  redirect_uris: [redirect ?? 'http://127.0.0.1/callback'],
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
});

const provider = new Provider(issuer, {
  clients: [client('limen'), client('other'), ...(webRedirect ? [client('limen-web', webRedirect)] : [])],
  findAccount: async (ctx, id) => (users[id] ? {
    accountId: id,
    claims: async () => ({ sub: id, ...users[id] }),
  } : undefined),
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'groups'],
  },
  conformIdTokenClaims: false, // the claims go into the ID token, not only to userinfo
  pkce: { methods: ['S256'], required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ['limen-tests-cookie-key-0123456789'] },
  ttl: { IdToken: 120, AccessToken: 120, AuthorizationCode: 60, Interaction: 300, Session: 600, Grant: 600 },
});
provider.proxy = false;

const server = provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
