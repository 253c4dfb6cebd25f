// A real OpenID Provider for the tests and the demo: node's oidc-provider (a certified OP) with
// one client, users read from a JSON file, and a plain login page a browser test can fill in.
//
// Environment:
//   OIDC_PORT                 port on 127.0.0.1 (0: any free one); the issuer is http://127.0.0.1:<port>
//   OIDC_USERS_FILE           {"alice": {"password", "email", "name", "groups": [...], "amr": [...]}, ...}
//                             read again at every sign-in, so a test changes the directory by
//                             rewriting it
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET
//   OIDC_REDIRECT_URIS, OIDC_POST_LOGOUT_REDIRECT_URIS   comma-separated
//   OIDC_ID_TOKEN_TTL         seconds (300)
//   OIDC_CLOCK_OFFSET         seconds added to this provider's clock: a negative one issues ID
//                             tokens that have already expired by the relying party's clock
//
// Prints "oidc-provider: serving <issuer>" once it listens. The client is a "native" one only so
// that its loopback redirect URIs match any port (RFC 8252, 7.3): the test Daphne's port is chosen
// after this provider starts. Sign-in asks for the password; consent is implied (first party).

import { generateKeyPairSync, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";

const offset = Number(process.env.OIDC_CLOCK_OFFSET || "0") * 1000;
if (offset) {
  const realNow = Date.now;
  Date.now = () => realNow() + offset; // what oidc-provider's epochTime() reads
}
// Imported after the clock is set. (It warns that node 20 is not its supported LTS; it works.)
const { default: Provider } = await import("oidc-provider");

const env = process.env;
const list = (value) => (value || "").split(",").map((item) => item.trim()).filter(Boolean);

function users() {
  return JSON.parse(readFileSync(env.OIDC_USERS_FILE, "utf8"));
}

async function findAccount(ctx, sub) {
  const user = users()[sub];
  if (!user) return undefined;
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        preferred_username: sub,
        name: user.name || sub,
        email: user.email || `${sub}@example.test`,
        email_verified: true,
        groups: user.groups || [],
      };
    },
  };
}

const signingKey = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({
  format: "jwk",
});

const escape = (text) =>
  String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(res, status, title, body) {
  res.writeHead(status, { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" });
  res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escape(title)}</title>
</head><body><main><h1>${escape(title)}</h1>${body}</main></body></html>`);
}

function loginForm(res, uid, error, username = "") {
  page(res, error ? 401 : 200, "Sign in to the test identity provider", `
${error ? `<p role="alert">${escape(error)}</p>` : ""}
<form method="post" action="/interaction/${escape(uid)}/login">
  <label for="username">Username</label> <input id="username" name="username" value="${escape(username)}" autofocus required>
  <label for="password">Password</label> <input id="password" name="password" type="password" required>
  <button type="submit">Sign in</button>
</form>`);
}

async function readForm(req) {
  let body = "";
  for await (const chunk of req) body += chunk;
  return new URLSearchParams(body);
}

async function interaction(provider, req, res, url) {
  const [, , uid, action] = url.pathname.split("/");
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error("interaction does not match its cookie");
  const { prompt, params, session, grantId } = details;
  if (req.method === "GET" && prompt.name === "login") {
    return loginForm(res, uid, "", params.login_hint || "");
  }
  if (req.method === "POST" && action === "login" && prompt.name === "login") {
    const form = await readForm(req);
    const username = form.get("username") || "";
    const user = users()[username];
    if (!user || user.password !== form.get("password")) {
      return loginForm(res, uid, "Wrong username or password.", username);
    }
    return provider.interactionFinished(
      req, res,
      { login: { accountId: username, amr: user.amr || ["pwd"] } },
      { mergeWithLastSubmission: false },
    );
  }
  if (prompt.name === "consent") {
    const grant = grantId
      ? await provider.Grant.find(grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(" "));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    return provider.interactionFinished(
      req, res, { consent: { grantId: await grant.save() } }, { mergeWithLastSubmission: true },
    );
  }
  return page(res, 400, "Unexpected interaction", `<p>${escape(prompt.name)}</p>`);
}

let handle = (req, res) => { res.writeHead(503); res.end(); };
const server = createServer((req, res) => handle(req, res));
server.listen(Number(env.OIDC_PORT || "0"), "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: env.OIDC_CLIENT_ID,
        client_secret: env.OIDC_CLIENT_SECRET,
        application_type: "native",
        redirect_uris: list(env.OIDC_REDIRECT_URIS),
        post_logout_redirect_uris: list(env.OIDC_POST_LOGOUT_REDIRECT_URIS),
        token_endpoint_auth_method: "client_secret_basic",
      },
    ],
    findAccount,
    jwks: { keys: [{ ...signingKey, kid: "tests", alg: "RS256", use: "sig" }] },
    cookies: { keys: [randomBytes(32).toString("hex")] },
    claims: {
      // amr (how the user authenticated, RFC 8176) with the openid scope, so that the ID token of
      // a code flow carries it, as Keycloak's and Azure's do
      openid: ["sub", "amr"],
      email: ["email", "email_verified"],
      profile: ["name", "preferred_username"],
      groups: ["groups"],
    },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: true },
    },
    ttl: { IdToken: Number(env.OIDC_ID_TOKEN_TTL || "300") },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  });
  provider.on("server_error", (ctx, error) => console.error("oidc-provider error:", error));
  const callback = provider.callback();
  handle = (req, res) => {
    const url = new URL(req.url, issuer);
    if (url.pathname.startsWith("/interaction/")) {
      interaction(provider, req, res, url).catch((error) => {
        console.error("interaction failed:", error);
        if (!res.headersSent) page(res, 400, "Sign-in failed", `<p>${escape(error.message)}</p>`);
      });
      return;
    }
    callback(req, res);
  };
  console.log(`oidc-provider: serving ${issuer}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
