// The watch page: a read-only xterm.js fed with the session's current screen, then its
// output as it is committed. Nothing typed here reaches the session.
import { Terminal } from "../vendor/xterm/xterm.mjs";
import { Unicode11Addon } from "../vendor/xterm/addon-unicode11.mjs";
import { screenLines, socketUrl, stateSetter } from "./common.js";

const element = document.getElementById("terminal");
const stateLabel = document.getElementById("watch-state");
const term = new Terminal({ allowProposedApi: true, disableStdin: true, scrollback: 10000,
  fontFamily: '"DejaVu Sans Mono", "Noto Sans Mono", ui-monospace, monospace', fontSize: 14,
  theme: { background: "#0d1117" } });
term.loadAddon(new Unicode11Addon());
term.unicode.activeVersion = "11";
term.open(element);

const app = { term, state: "connecting", reason: "",
  screenLines: () => screenLines(term) };
window.watchApp = app; // for tests

const setState = stateSetter(app, stateLabel);

const url = socketUrl(element.dataset.socketPath);
const socket = new WebSocket(url);
socket.binaryType = "arraybuffer";
let last = null;

socket.addEventListener("message", (event) => {
  if (event.data instanceof ArrayBuffer) {
    term.write(new Uint8Array(event.data));
    return;
  }
  const message = JSON.parse(event.data);
  last = message;
  if (message.type === "snapshot") {
    if (message.cols && message.rows) term.resize(message.cols, message.rows);
    setState("connected", "live");
  } else if (message.type === "resize") {
    term.resize(message.cols, message.rows);
  } else if (message.type === "ended") {
    const exit = message.exit_code === null ? "" : `, exit code ${message.exit_code}`;
    app.reason = message.ended_by
      ? `${message.ended_by} ended the session.`
      : `The session ended (${message.reason}${exit}).`;
  } else if (message.type === "error") {
    app.reason = message.message;
  }
});

socket.addEventListener("close", (event) => {
  setState(last?.type === "ended" ? "ended" : "error", last?.type === "ended" ? "ended" : "closed");
  document.getElementById("watch-ended-reason").textContent = app.reason || `The connection closed (${event.code}).`;
  document.getElementById("watch-ended").hidden = false;
});

// "End session" without leaving the page, so the watcher sees the session end; the form still
// works as a plain POST where this script does not run.
const endForm = document.querySelector("form.end-session");
if (endForm) {
  endForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = endForm.querySelector("button");
    button.disabled = true;
    button.textContent = "Ending…";
    const response = await fetch(endForm.action, { method: "POST", body: new FormData(endForm), credentials: "same-origin" });
    if (!response.ok) {
      button.disabled = false;
      button.textContent = "End session";
      app.reason = `Could not end the session (HTTP ${response.status}).`;
    }
  });
}
