// Opening an app (https://<app>.<proxy host>) from the web UI: the proxy creates an app
// session for the web session (POST /v1/webapi/apps/session, CSRF-checked) and answers the
// one-time hand-over URL on the app's own host, which sets the app's cookie there. The login
// page's `redirect` may name an app URL: it is followed only when its host is the public
// address of an app the user's roles list, never to any other site (no open redirect).
import { call, user } from "./api";

export interface App { name: string; public_addr: string; labels: Record<string, string>; description?: string; }

export async function visibleApps(): Promise<App[]> {
  try {
    return (await user<{ items: App[] }>("apps")).items ?? [];
  } catch {
    return [];
  }
}

export async function openApp(app: App, path = "/"): Promise<void> {
  const { redirect } = await call<{ redirect: string }>("POST", "/v1/webapi/apps/session",
    { app: app.name, path });
  const target = new URL(redirect);
  if (target.protocol !== "https:" || target.hostname !== app.public_addr.toLowerCase()) {
    throw new Error(`the proxy answered an unexpected address for app ${app.name}`);
  }
  window.location.assign(target.href);
}

/** The app an absolute `redirect` names (by its host), or null. */
export async function appOf(redirect: string | null): Promise<{ app: App; path: string } | null> {
  if (!redirect || !/^https:\/\//i.test(redirect)) return null;
  let url: URL;
  try { url = new URL(redirect); } catch { return null; }
  if (url.username || url.password) return null;
  const host = url.hostname.toLowerCase();
  const app = (await visibleApps()).find((a) => a.public_addr.toLowerCase() === host);
  return app ? { app, path: url.pathname + url.search } : null;
}
