// The login page's single sign-on buttons: one per connector the proxy lists with a web
// callback (name, kind, display; nothing secret). A click asks the proxy to start the login
// (it keeps the session's key and ties the login to this browser) and goes to the provider;
// the provider returns to the proxy's web callback, which sets the web session and sends the
// browser on to `redirect` (a web UI path, checked again by the proxy).
import { call } from "./api";
import { h, showError } from "./dom";

interface Connector {
  name: string;
  kind: string;
  display: string;
  web: boolean;
}

export async function ssoButtons(error: HTMLElement, redirect: string | null): Promise<HTMLElement | null> {
  let connectors: Connector[];
  try {
    connectors = (await call<{ items: Connector[] }>("GET", "/v1/webapi/sso/connectors")).items;
  } catch {
    return null;  // the password form still works
  }
  const usable = connectors.filter((c) => c.web && (c.kind === "oidc" || c.kind === "github"));
  if (usable.length === 0) return null;
  const box = h("div", { class: "sso", id: "sso" }, h("p", {}, "Or log in with"));
  for (const connector of usable) {
    const button = h("button", { type: "button", class: "sso-button",
      id: `sso-${connector.kind}-${connector.name}` }, connector.display || connector.name);
    button.addEventListener("click", async () => {
      error.hidden = true;
      button.disabled = true;
      try {
        const path = `/v1/webapi/sso/${connector.kind}/${encodeURIComponent(connector.name)}/web`;
        const started = await call<{ auth_url: string }>("POST", path, redirect ? { redirect } : {});
        window.location.assign(started.auth_url);
      } catch (err) {
        showError(error, err);
        button.disabled = false;
      }
    });
    box.append(button);
  }
  return box;
}
