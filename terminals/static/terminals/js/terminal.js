// The terminal page: xterm.js (view.js) on a TerminalConnection (connection.js: the
// protocol, flow control, resuming). Output bytes go straight to term.write(Uint8Array);
// xterm.js decodes UTF-8 across frames.
import { screenLines, stateSetter } from "./common.js";
import { TerminalConnection } from "./connection.js";
import { gettext, interpolate } from "./i18n.js";
import { showWatchers } from "./watchers.js";
import { setUpSearch } from "./search.js";
import { readPreferences, setUpSettings } from "./settings.js";
import { createTerminalView } from "./view.js";

const element = document.getElementById("terminal");
const stateLabel = document.getElementById("terminal-state");
const sessionLabel = document.getElementById("terminal-session");
const endedBox = document.getElementById("terminal-ended");
const endedReason = document.getElementById("terminal-ended-reason");

const preferences = readPreferences(); // the user's font size and theme (settings.js)
const { term, fit, search, renderer } = await createTerminalView(element, preferences);

const app = {
  term, renderer, state: "connecting", session: null, command: null, exitCode: null, closeCode: null, reason: "",
  screenLines: () => screenLines(term),
};
window.terminalApp = app; // for tests and for people poking at the page

const setState = stateSetter(app, stateLabel);
const header = document.querySelector(".site-header");
const restartButton = document.getElementById("terminal-restart");
const reconnectButton = document.getElementById("terminal-reconnect");
let shownReconnected = null;

const connection = new TerminalConnection(element.dataset.socketPath, {
  container: element.dataset.container,
  command: element.dataset.command,
  callbacks: {
    output: (bytes, drawn) => term.write(bytes, drawn),
    ready(message, resumed, { inputLost = false } = {}) {
      app.session = message.session;
      app.command = message.command;
      app.container = message.container;
      app.resumes = connection.resumes;
      // The first 8 characters name it well enough on a full header; the tooltip has it all.
      sessionLabel.textContent = message.session.slice(0, 8);
      sessionLabel.title = interpolate(gettext("session %(id)s"), { id: message.session });
      showContainer(message);
      endedBox.hidden = true;
      // The label stays short (the header is full at 1280 px); the command is its tooltip.
      stateLabel.title = `${message.container}: ${message.command.join(" ")}`;
      if (resumed && inputLost) {
        // Stays until the next change: the person must know to look at what they typed.
        clearTimeout(shownReconnected);
        setState("connected", gettext("reconnected; input sent as the connection dropped was lost"));
      } else if (resumed) {
        // "reconnected" stays a moment, then the usual label.
        setState("connected", gettext("reconnected"));
        clearTimeout(shownReconnected);
        shownReconnected = setTimeout(() => {
          if (app.state === "connected") stateLabel.textContent = gettext("connected");
        }, 3000);
      } else {
        setState("connected", gettext("connected"));
      }
      term.focus();
    },
    message(message) {
      if (message.type === "watchers") showWatchers(header, message.watchers);
    },
    state: (name, text) => setState(name, text),
    ended(reason, { code, message, resumable }) {
      showWatchers(header, []);
      app.closeCode = code;
      app.reason = reason;
      if (message?.type === "exit") app.exitCode = message.code;
      setState(resumable ? "disconnected" : message?.type === "exit" ? "ended" : "error",
        resumable ? gettext("disconnected") : message?.type === "exit" ? gettext("ended") : gettext("closed"));
      endedReason.textContent = reason;
      reconnectButton.hidden = !resumable;
      endedBox.hidden = false;
      (resumable ? reconnectButton : restartButton).focus();
    },
  },
});
app.connection = connection;
connection.size = { cols: term.cols, rows: term.rows };
connection.open();

// The container the shell runs in (the portal may not have said), and the pod's others.
function showContainer(message) {
  const label = document.getElementById("terminal-container");
  if (label) label.textContent = message.container;
  const picker = document.getElementById("terminal-container-switch");
  const others = (message.containers || []).filter((name) => name !== message.container);
  if (!picker || !others.length) return;
  picker.replaceChildren(new Option(message.container, "", true, true),
    ...others.map((name) => new Option(name, name)));
  picker.hidden = false;
}
document.getElementById("terminal-container-switch")?.addEventListener("change", (event) => {
  // Another container is another session: open it in this tab (this one ends within the grace).
  const target = new URL(window.location.href);
  target.searchParams.set("container", event.target.value);
  target.searchParams.delete("command");
  connection.close();
  window.location.assign(target);
});

term.onData((data) => connection.sendText(data));
// Some sequences (mouse reports in X10 mode) are bytes, not text.
term.onBinary((data) => connection.sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
term.onResize(({ cols, rows }) => connection.resize(cols, rows));

// Copy on select; paste works as in any terminal (Ctrl+Shift+V, the context menu).
term.onSelectionChange(() => {
  const text = term.getSelection();
  if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
});

restartButton.addEventListener("click", () => {
  // A new session in the same tab, without the old one's screen.
  endedBox.hidden = true;
  term.reset();
  connection.restart();
});
reconnectButton.addEventListener("click", () => {
  endedBox.hidden = true;
  connection.retry();
});
setUpSearch(term, search);
setUpSettings(term, () => fit.fit(), preferences);
term.focus();
