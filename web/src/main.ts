// The single-page app: a small router over location.pathname under /web, the navigation bar,
// the session check (pages other than login and sign-up need a web session) and its renewal.
import "./style.css";
import { ApiError, Session, currentSession, logout, renew } from "./api";
import { auditPage } from "./audit";
import { h, mount } from "./dom";
import { loginPage } from "./login";
import { leavePlayer, playerPage, recordingsPage } from "./recordings";
import { resourcesPage } from "./resources";
import { signupPage } from "./signup";
import { leaveTerminal, terminalPage } from "./terminal";
import { keysPage } from "./webauthn";

const RENEW_EVERY_MS = 4 * 60 * 1000;
let renewTimer: number | undefined;

function go(path: string): void {
  history.pushState(null, "", path);
  void route();
}

function nav(session: Session | null): void {
  const bar = document.getElementById("nav")!;
  if (!session) {
    bar.replaceChildren(h("span", { class: "brand" }, "Limen"));
    return;
  }
  const link = (path: string, text: string, id: string) => {
    const a = h("a", { href: path, id }, text);
    a.addEventListener("click", (e) => { e.preventDefault(); go(path); });
    return a;
  };
  const out = h("button", { id: "logout", type: "button" }, "Log out");
  out.addEventListener("click", async () => {
    try { await logout(); } catch { /* gone already */ }
    window.clearInterval(renewTimer);
    go("/web/login");
  });
  bar.replaceChildren(h("span", { class: "brand" }, "Limen"),
    link("/web/", "Resources", "nav-resources"), link("/web/recordings", "Recordings", "nav-recordings"),
    link("/web/audit", "Audit log", "nav-audit"), link("/web/mfa", "Security keys", "nav-mfa"),
    h("span", { class: "who", id: "who" }, `${session.user} @ ${session.cluster}`), out);
}

async function route(): Promise<void> {
  leaveTerminal();
  leavePlayer();
  document.body.dataset.page = "";
  const path = window.location.pathname;
  if (path === "/web/login") {
    nav(null);
    await loginPage(go);
    return;
  }
  if (path === "/web/signup" || path.startsWith("/web/signup/")) {
    nav(null);
    await signupPage(go);
    return;
  }
  let session: Session | null;
  try {
    session = await currentSession();
  } catch (err) {
    mount(h("p", { class: "error" }, err instanceof Error ? err.message : String(err)));
    return;
  }
  if (!session) {
    go(`/web/login?${new URLSearchParams({ redirect: path + window.location.search })}`);
    return;
  }
  nav(session);
  window.clearInterval(renewTimer);
  renewTimer = window.setInterval(() => {
    renew().catch((err) => { if (err instanceof ApiError && err.status === 401) go("/web/login"); });
  }, RENEW_EVERY_MS);
  if (path === "/web/terminal") terminalPage();
  else if (path === "/web/recordings") await recordingsPage(go);
  else if (path.startsWith("/web/recordings/")) playerPage(decodeURIComponent(path.slice("/web/recordings/".length)));
  else if (path === "/web/audit") await auditPage();
  else if (path === "/web/mfa") await keysPage();
  else await resourcesPage(session, go);
  document.body.dataset.page = path;
}

window.addEventListener("popstate", () => void route());
void route();
