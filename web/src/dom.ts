// A tiny element builder: text always goes in as text nodes (never HTML), so data from the
// server (labels, audit fields, error messages) cannot inject markup.
type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs: Attrs = {}, ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function mount(...children: Child[]): HTMLElement {
  const app = document.getElementById("app")!;
  app.replaceChildren();
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    app.append(child instanceof Node ? child : String(child));
  }
  return app;
}

export function errorBox(): HTMLElement {
  return h("p", { class: "error", id: "error", role: "alert", hidden: true });
}

export function showError(box: HTMLElement, err: unknown): void {
  box.textContent = err instanceof Error ? err.message : String(err);
  box.hidden = false;
}

export function labelChips(labels: Record<string, string>): HTMLElement {
  return h("span", { class: "labels" },
    ...Object.entries(labels).sort().map(([k, v]) => h("span", { class: "label" }, `${k}=${v}`)));
}
