// The watch page: a read-only xterm.js fed with the session's current screen, then its
// output as it is committed. Nothing typed here reaches the session.
import { Terminal } from "../vendor/xterm/xterm.mjs";
import { Unicode11Addon } from "../vendor/xterm/addon-unicode11.mjs";

const element = document.getElementById("terminal");
const stateLabel = document.getElementById("watch-state");
const term = new Terminal({ allowProposedApi: true, disableStdin: true, scrollback: 10000,
  fontFamily: '"DejaVu Sans Mono", "Noto Sans Mono", ui-monospace, monospace', fontSize: 14,
  theme: { background: "#0d1117" } });
term.loadAddon(new Unicode11Addon());
term.unicode.activeVersion = "11";
term.open(element);

const app = { term, state: "connecting", reason: "",
  screenLines() {
    const buffer = term.buffer.active, lines = [];
    for (let y = 0; y < term.rows; y++) lines.push(buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? "");
    return lines;
  } };
window.watchApp = app; // for tests

function setState(state, text) {
  app.state = state;
  stateLabel.dataset.state = state;
  stateLabel.textContent = text;
}

const url = new URL(element.dataset.socketPath, window.location.href);
url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
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
    const by = message.ended_by ? ` by ${message.ended_by}` : "";
    app.reason = `The session ended (${message.reason}${by}).`;
  } else if (message.type === "error") {
    app.reason = message.message;
  }
});

socket.addEventListener("close", (event) => {
  setState(last?.type === "ended" ? "ended" : "error", last?.type === "ended" ? "ended" : "closed");
  document.getElementById("watch-ended-reason").textContent = app.reason || `The connection closed (${event.code}).`;
  document.getElementById("watch-ended").hidden = false;
});
