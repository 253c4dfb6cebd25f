// The terminal page: xterm.js bridged to /ws/terminals/… as the browser protocol says.
// Output bytes go straight to term.write(Uint8Array); xterm.js decodes UTF-8 across frames.
import { Terminal } from "../vendor/xterm/xterm.mjs";
import { FitAddon } from "../vendor/xterm/addon-fit.mjs";
import { SearchAddon } from "../vendor/xterm/addon-search.mjs";
import { Unicode11Addon } from "../vendor/xterm/addon-unicode11.mjs";
import { WebLinksAddon } from "../vendor/xterm/addon-web-links.mjs";
import { screenLines, socketUrl, stateSetter } from "./common.js";

const STDIN_CHUNK = 16 * 1024; // below the server's frame limit (64 KiB by default)
const ACK_EVERY = 64 * 1024; // tell the server what we have drawn, so it can send more

const CLOSE_REASONS = {
  1000: "The session ended.",
  1006: "The connection was lost.",
  1011: "The terminal failed because of a server error.",
  1012: "The server is restarting; open a new session in a moment.",
  1013: "The server cannot do that right now; try again in a moment.",
  4400: "The request was not valid.",
  4401: "You are not logged in.",
  4403: "You may not open this terminal.",
  4404: "There is no such pod or container.",
  4408: "The session was idle too long.",
  4409: "An auditor ended the session.",
  4410: "The session reached its maximum duration.",
  4413: "Too much data was sent at once.",
  4429: "You have too many terminals open.",
  4502: "The cluster could not run the terminal.",
  4503: "The audit store is unavailable, so the session was stopped.",
};

const element = document.getElementById("terminal");
const stateLabel = document.getElementById("terminal-state");
const sessionLabel = document.getElementById("terminal-session");
const endedBox = document.getElementById("terminal-ended");
const endedReason = document.getElementById("terminal-ended-reason");

const term = new Terminal({
  allowProposedApi: true, // needed by the unicode11 addon
  cursorBlink: true,
  fontFamily: '"DejaVu Sans Mono", "Noto Sans Mono", ui-monospace, monospace',
  fontSize: 14,
  scrollback: 10000,
  theme: { background: "#0d1117" },
});
const fit = new FitAddon();
const search = new SearchAddon();
term.loadAddon(fit);
term.loadAddon(search);
term.loadAddon(new WebLinksAddon());
term.loadAddon(new Unicode11Addon());
term.unicode.activeVersion = "11";
term.open(element);

// WebGL draws faster where the browser has it; the DOM renderer is the fallback.
let renderer = "dom";
try {
  const { WebglAddon } = await import("../vendor/xterm/addon-webgl.mjs");
  const webgl = new WebglAddon();
  webgl.onContextLoss(() => webgl.dispose());
  term.loadAddon(webgl);
  renderer = "webgl";
} catch (error) {
  console.info("webshell: WebGL renderer unavailable, using the DOM renderer:", error);
}
fit.fit();
new ResizeObserver(() => fit.fit()).observe(element);

const app = {
  term, renderer, state: "connecting", session: null, command: null, exitCode: null, closeCode: null, reason: "",
  screenLines: () => screenLines(term),
};
window.terminalApp = app; // for tests and for people poking at the page

const setState = stateSetter(app, stateLabel);

const url = socketUrl(element.dataset.socketPath);
if (element.dataset.container) url.searchParams.set("container", element.dataset.container);
if (element.dataset.command) url.searchParams.set("command", element.dataset.command);

const socket = new WebSocket(url);
socket.binaryType = "arraybuffer";
const encoder = new TextEncoder();
let drawn = 0, acked = 0, lastMessage = null;

function sendJSON(message) {
  if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
}

function sendBytes(bytes) {
  for (let start = 0; start < bytes.length; start += STDIN_CHUNK) {
    if (socket.readyState !== WebSocket.OPEN) return;
    socket.send(bytes.subarray(start, start + STDIN_CHUNK));
  }
}

socket.addEventListener("open", () => {
  // The size goes first, as kubectl does, so the shell starts at the right size.
  sendJSON({ type: "resize", cols: term.cols, rows: term.rows });
  setState("connecting", "starting…");
});

socket.addEventListener("message", (event) => {
  if (event.data instanceof ArrayBuffer) {
    const bytes = new Uint8Array(event.data);
    term.write(bytes, () => {
      drawn += bytes.length;
      if (drawn - acked >= ACK_EVERY) {
        sendJSON({ type: "ack", bytes: drawn - acked });
        acked = drawn;
      }
    });
    return;
  }
  const message = JSON.parse(event.data);
  lastMessage = message;
  if (message.type === "ready") {
    app.session = message.session;
    app.command = message.command;
    sessionLabel.textContent = message.session;
    sessionLabel.title = `session ${message.session}`; // the label may be cut short
    setState("connected", `connected · ${message.command.join(" ")}`);
    term.focus();
  } else if (message.type === "exit") {
    app.exitCode = message.code;
  }
});

socket.addEventListener("close", (event) => {
  app.closeCode = event.code;
  let reason = CLOSE_REASONS[event.code] || `The connection closed (${event.code}).`;
  if (lastMessage?.type === "exit") {
    reason = `The process exited with code ${lastMessage.code}.`;
  } else if (lastMessage?.type === "error") {
    reason = lastMessage.message;
  }
  app.reason = reason;
  setState(lastMessage?.type === "exit" ? "ended" : "error", lastMessage?.type === "exit" ? "ended" : "closed");
  endedReason.textContent = reason;
  endedBox.hidden = false;
  document.getElementById("terminal-restart").focus();
});

term.onData((data) => sendBytes(encoder.encode(data)));
// Some sequences (mouse reports in X10 mode) are bytes, not text.
term.onBinary((data) => sendBytes(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
term.onResize(({ cols, rows }) => sendJSON({ type: "resize", cols, rows }));

// Copy on select; paste works as in any terminal (Ctrl+Shift+V, the context menu).
term.onSelectionChange(() => {
  const text = term.getSelection();
  if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
});

document.getElementById("terminal-restart").addEventListener("click", () => window.location.reload());
document.getElementById("terminal-search").addEventListener("submit", (event) => {
  event.preventDefault();
  search.findNext(document.getElementById("terminal-search-input").value);
});
term.focus();
