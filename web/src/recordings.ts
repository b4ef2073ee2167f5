// Recordings: the list the user may read, and a player (asciinema-player: play, pause,
// seeking on its progress bar, speed chosen here) for one session's asciicast v2 file.
import * as AsciinemaPlayer from "asciinema-player";
import "asciinema-player/dist/bundle/asciinema-player.css";
import { user } from "./api";
import { errorBox, h, mount, showError } from "./dom";

interface Recording { session_id: string; user: string; node: string; login: string;
  start: string; duration_seconds: number | null; incomplete: boolean; }

export async function recordingsPage(go: (path: string) => void): Promise<void> {
  const error = errorBox();
  const body = h("tbody", { id: "recordings" });
  mount(h("h1", {}, "Session recordings"), error,
    h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Start"), h("th", {}, "User"),
      h("th", {}, "Node"), h("th", {}, "Login"), h("th", {}, "Duration"), h("th", {}, "Session"))),
    body));
  try {
    const { items } = await user<{ items: Recording[] }>("recordings");
    body.replaceChildren(...items.map((r) => {
      const play = h("a", { href: `/web/recordings/${encodeURIComponent(r.session_id)}`,
        class: "play", "data-session": r.session_id }, r.session_id);
      play.addEventListener("click", (e) => { e.preventDefault(); go(play.getAttribute("href")!); });
      return h("tr", { class: "recording" }, h("td", {}, r.start), h("td", {}, r.user),
        h("td", {}, r.node), h("td", {}, r.login),
        h("td", {}, r.duration_seconds === null ? "" : `${r.duration_seconds} s`), h("td", {}, play));
    }));
  } catch (err) {
    showError(error, err);
  }
}

let player: AsciinemaPlayer.Player | null = null;

export function leavePlayer(): void {
  player?.dispose();
  player = null;
}

export function playerPage(sessionId: string): void {
  const box = h("div", { id: "player" });
  const speed = h("select", { id: "speed", "aria-label": "speed" },
    ...[0.5, 1, 2, 4].map((s) => h("option", { value: s, selected: s === 1 }, `${s}×`)));
  const url = `/v1/webapi/user/recordings/${encodeURIComponent(sessionId)}/cast`;
  const start = () => {
    leavePlayer();
    box.replaceChildren();
    player = AsciinemaPlayer.create(url, box, { speed: Number(speed.value), autoPlay: true,
      controls: true, fit: "width", idleTimeLimit: 2 });
  };
  speed.addEventListener("change", start);
  mount(h("h1", {}, `Session ${sessionId}`), h("p", {}, h("label", { for: "speed" }, "Speed "), speed,
    " ", h("a", { href: url, download: `${sessionId}.cast` }, "Download (asciicast v2)")), box);
  start();
}
