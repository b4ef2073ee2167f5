// The web terminal: xterm.js over a WebSocket to the proxy, which opens the SSH session to the
// node through its own SSH front (recorded and audited like lmsh ssh). The CSRF token travels
// as the first message, never in the URL.
import { FitAddon } from "@xterm/addon-fit";
import { Terminal } from "@xterm/xterm";
import "@xterm/xterm/css/xterm.css";
import { csrfToken } from "./api";
import { h, mount } from "./dom";

let cleanup: (() => void) | null = null;

export function leaveTerminal(): void {
  cleanup?.();
  cleanup = null;
}

export function terminalPage(): void {
  const params = new URLSearchParams(window.location.search);
  const node = params.get("node") ?? "";
  const login = params.get("login") ?? "";
  const status = h("p", { id: "term-status", class: "muted" }, `Connecting to ${login}@${params.get("name") ?? node}…`);
  const box = h("div", { id: "terminal" });
  mount(h("h1", {}, `${login}@${params.get("name") ?? node}`), status, box);
  const term = new Terminal({ cursorBlink: true, convertEol: false, fontSize: 14 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  const ws = new WebSocket(`wss://${window.location.host}/v1/webapi/terminal`);
  ws.binaryType = "arraybuffer";
  const encoder = new TextEncoder();
  ws.addEventListener("open", () => {
    ws.send(JSON.stringify({ csrf: csrfToken(), node, login, cluster: params.get("cluster") ?? "",
      cols: term.cols, rows: term.rows }));
  });
  ws.addEventListener("message", (event) => {
    if (event.data instanceof ArrayBuffer) {
      term.write(new Uint8Array(event.data));
      return;
    }
    const message = JSON.parse(String(event.data));
    if (message.connected !== undefined) {
      status.textContent = `Connected to ${params.get("name") ?? message.connected}`;
      status.dataset.state = "connected";
      term.focus();
    } else if (message.error !== undefined) {
      status.textContent = `Error: ${message.error}`;
      status.dataset.state = "error";
      status.className = "error";
    } else if (message.exit !== undefined) {
      status.textContent = `Session ended (exit status ${message.exit})`;
      status.dataset.state = "ended";
    }
  });
  ws.addEventListener("close", () => {
    if (!status.dataset.state || status.dataset.state === "connected") {
      status.textContent = "Disconnected";
      status.dataset.state = "ended";
    }
  });
  const typed = term.onData((data) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  const resized = term.onResize(({ cols, rows }) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: [cols, rows] }));
  });
  const onWindow = () => fit.fit();
  window.addEventListener("resize", onWindow);
  cleanup = () => {
    window.removeEventListener("resize", onWindow);
    typed.dispose();
    resized.dispose();
    ws.close();
    term.dispose();
  };
}
