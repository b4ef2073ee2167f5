// The audit log (for roles whose rules allow `event` list): filter by type, user and time
// ("1h", "2d" or an ISO date/time), newest first.
import { user } from "./api";
import { errorBox, h, mount, showError } from "./dom";

interface AuditEvent { event: string; code: string; time: string; user?: string; [k: string]: unknown; }
const SHOWN = new Set(["event", "code", "time", "user", "uid", "cluster", "chain"]);

export async function auditPage(): Promise<void> {
  const params = new URLSearchParams(window.location.search);
  const error = errorBox();
  const type = h("input", { id: "f-type", placeholder: "type, e.g. session.start", value: params.get("type") ?? "" });
  const who = h("input", { id: "f-user", placeholder: "user", value: params.get("user") ?? "" });
  const since = h("input", { id: "f-since", placeholder: "since: 1h, 2d or ISO time", value: params.get("since") ?? "1d" });
  const body = h("tbody", { id: "events" });
  const form = h("form", { class: "filters" }, type, who, since, h("button", { type: "submit", id: "f-apply" }, "Search"));
  mount(h("h1", {}, "Audit log"), form, error,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Time"), h("th", {}, "Event"),
      h("th", {}, "Code"), h("th", {}, "User"), h("th", {}, "Details"))), body));
  const search = async () => {
    error.hidden = true;
    const query = { type: type.value.trim(), user: who.value.trim(), since: since.value.trim() };
    history.replaceState(null, "", `/web/audit?${new URLSearchParams(query)}`);
    try {
      const { events } = await user<{ events: AuditEvent[] }>("events",
        { ...query, order: "newest", limit: "500" });
      body.replaceChildren(...events.map((e) => h("tr", { class: "audit-event", "data-event": e.event },
        h("td", {}, e.time), h("td", {}, e.event), h("td", {}, e.code), h("td", {}, e.user ?? ""),
        h("td", { class: "details" }, JSON.stringify(Object.fromEntries(
          Object.entries(e).filter(([k]) => !SHOWN.has(k))))))));
      body.dataset.loaded = "true";
    } catch (err) {
      showError(error, err);
    }
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); void search(); });
  await search();
}
