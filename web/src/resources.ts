// What the user may reach: nodes (with the logins allowed on each), databases, Kubernetes
// clusters and leaf clusters, from the RBAC-filtered user routes; labels shown, one search box.
import { Session, user } from "./api";
import { App, openApp, visibleApps } from "./apps";
import { errorBox, h, labelChips, mount, showError } from "./dom";

interface Node { name: string; hostname: string; host_id: string; labels: Record<string, string>;
  logins: string[]; online: boolean; }
interface Named { name: string; labels?: Record<string, string>; [key: string]: unknown; }
interface Row { kind: string; name: string; labels: Record<string, string>; action: HTMLElement | null; }

function terminalLink(node: Node, go: (path: string) => void): HTMLElement {
  const login = h("select", { class: "login", "aria-label": `login on ${node.hostname}` },
    ...node.logins.map((l) => h("option", { value: l }, l)));
  const target = node.host_id || node.hostname;
  const open = h("button", { class: "connect", "data-node": node.hostname }, "Connect");
  open.addEventListener("click", () => go(`/web/terminal?${new URLSearchParams({
    node: target, name: node.hostname, login: login.value })}`));
  return node.logins.length ? h("span", {}, login, open) : h("span", { class: "muted" }, "no login");
}

function appLink(app: App, error: HTMLElement): HTMLElement {
  const open = h("button", { class: "open-app", "data-app": app.name }, "Open");
  open.addEventListener("click", () => openApp(app).catch((err) => showError(error, err)));
  return open;
}

async function items<T>(path: string): Promise<T[]> {
  try {
    return (await user<{ items: T[] }>(path)).items ?? [];
  } catch {
    return [];  // a kind the user's roles do not cover lists nothing
  }
}

export async function resourcesPage(_session: Session, go: (path: string) => void): Promise<void> {
  const error = errorBox();
  const search = h("input", { id: "search", type: "search", placeholder: "Search names and labels" });
  const body = h("tbody", { id: "resources" });
  mount(h("h1", {}, "Resources"), search, error,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Kind"), h("th", {}, "Name"),
      h("th", {}, "Labels"), h("th", {}, ""))), body));
  let rows: Row[] = [];
  try {
    const [nodes, dbs, kubes, clusters, apps] = await Promise.all([
      user<{ items: Node[] }>("nodes").then((a) => a.items),
      items<Named>("databases"), items<Named>("kube/clusters"), items<Named>("clusters"),
      visibleApps()]);
    rows = [
      ...nodes.map((n) => ({ kind: "node", name: n.hostname, labels: n.labels,
        action: terminalLink(n, go) })),
      ...dbs.map((d) => ({ kind: "database", name: d.name, labels: d.labels ?? {}, action: null })),
      ...kubes.map((k) => ({ kind: "kube cluster", name: k.name, labels: k.labels ?? {}, action: null })),
      ...apps.map((a) => ({ kind: "app", name: a.name, labels: a.labels ?? {}, action: appLink(a, error) })),
      ...clusters.map((c) => ({ kind: "cluster", name: c.name, labels: c.labels ?? {}, action: null })),
    ];
  } catch (err) {
    showError(error, err);
  }
  const render = () => {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    body.replaceChildren(...rows.filter((row) => {
      const text = [row.kind, row.name, ...Object.entries(row.labels).map(([k, v]) => `${k}=${v}`)]
        .join(" ").toLowerCase();
      return words.every((w) => text.includes(w));
    }).map((row) => h("tr", { class: "resource", "data-kind": row.kind, "data-name": row.name },
      h("td", {}, row.kind), h("td", { class: "name" }, row.name), h("td", {}, labelChips(row.labels)),
      h("td", {}, row.action))));
  };
  search.addEventListener("input", render);
  render();
}
