// The workspace: the pods the user may open (a tree with a filter) beside terminals in tabs.
//
// Each tab is a TerminalConnection (connection.js) drawing into a view of its own (view.js);
// background tabs keep their sessions and draw while hidden, and are refitted when shown. The
// open tabs are kept in sessionStorage, each with its own resume key, so a reload of the page
// resumes every one of them (within the server's RESUME_GRACE). Closing a tab on purpose ends
// its session; the page asks first while the session is live, and warns before it is left.
import { screenLines } from "./common.js";
import { gettext, interpolate } from "./i18n.js";
import { TerminalConnection } from "./connection.js";
import { readPreferences } from "./settings.js";
import { createTerminalView } from "./view.js";
import { showWatchers } from "./watchers.js";

const STORAGE_KEY = "webshell.workspace"; // {tabs: [{id, target}], active: id}
// States in which the tab's session may still be running on the server.
const LIVE = new Set(["connecting", "connected", "reconnecting", "disconnected"]);
const SHORT = {
  connecting: gettext("connecting…"), connected: gettext("connected"),
  reconnecting: gettext("reconnecting…"), disconnected: gettext("disconnected"),
  ended: gettext("ended"), error: gettext("closed"),
};

const root = document.getElementById("workspace");
const tablist = document.getElementById("ws-tabs");
const panels = document.getElementById("ws-panels");
const empty = document.getElementById("ws-empty");
const template = document.getElementById("ws-panel-template");
const closeDialog = document.getElementById("ws-close-dialog");
const filter = document.getElementById("ws-filter");
const preferences = readPreferences(); // the user's font size and theme (settings.js)
const storage = window.sessionStorage;
const pageTitle = document.title;

const tabs = []; // in the tab bar's order
let active = null;

class Tab {
  constructor(target, id) {
    this.id = id;
    this.target = target; // {cluster, namespace, pod, container}
    this.name = `${target.pod}/${target.container}`;
    this.where = `${target.cluster} / ${target.namespace} / ${target.pod} / ${target.container}`;
    this.state = "connecting";
    this.session = null;
    this.reason = "";
    this.closed = false;

    this.item = document.createElement("div");
    this.item.className = "ws-tab";
    this.item.setAttribute("role", "presentation");
    this.button = document.createElement("button");
    this.button.type = "button";
    this.button.id = `ws-tab-${id}`;
    this.button.setAttribute("role", "tab");
    this.button.setAttribute("aria-controls", `ws-panel-${id}`);
    this.button.setAttribute("aria-selected", "false");
    this.button.tabIndex = -1;
    const dot = document.createElement("span");
    dot.className = "ws-dot";
    dot.setAttribute("aria-hidden", "true");
    const name = document.createElement("span");
    name.className = "ws-tab-name";
    name.textContent = this.name;
    this.stateText = document.createElement("span");
    this.stateText.className = "ws-tab-state";
    this.button.append(dot, name, " ", this.stateText); // its name: "web/main connected"
    // Outside the tab (a tab holds no other control); the keyboard closes with Delete.
    this.closeButton = document.createElement("button");
    this.closeButton.type = "button";
    this.closeButton.className = "ws-tab-close";
    this.closeButton.tabIndex = -1;
    this.closeButton.textContent = "×";
    const closeLabel = interpolate(gettext("Close %(name)s"), { name: this.name });
    this.closeButton.setAttribute("aria-label", closeLabel);
    this.closeButton.title = closeLabel;
    this.item.append(this.button, this.closeButton);

    this.panel = template.content.firstElementChild.cloneNode(true);
    this.panel.id = `ws-panel-${id}`;
    this.panel.setAttribute("aria-labelledby", this.button.id);
    this.panel.querySelector(".target").textContent = this.where;
    this.bar = this.panel.querySelector(".ws-panel-bar");
    this.stateLabel = this.panel.querySelector(".state");
    this.sessionLabel = this.panel.querySelector(".session");
    this.element = this.panel.querySelector(".ws-terminal");
    this.endedBox = this.panel.querySelector(".ended");
    this.endedReason = this.panel.querySelector(".ended-reason");
    this.reconnectButton = this.panel.querySelector(".ws-reconnect");
    this.restartButton = this.panel.querySelector(".ws-restart");
    this.endedReason.id = `ws-ended-${id}`;
    this.endedBox.setAttribute("aria-labelledby", this.endedReason.id);

    this.button.addEventListener("click", () => select(this, { focusTerminal: true }));
    this.closeButton.addEventListener("click", () => requestClose(this));
    this.reconnectButton.addEventListener("click", () => {
      this.endedBox.hidden = true;
      this.connection.retry();
      this.term.focus();
    });
    this.restartButton.addEventListener("click", () => {
      // A new session in the same tab, without the old one's screen.
      this.endedBox.hidden = true;
      this.term.reset();
      this.connection.restart();
      save();
      this.term.focus();
    });
  }

  get live() {
    return !this.closed && LIVE.has(this.state);
  }

  // Draw the terminal and connect: resume this tab's session if it has one (a reload).
  async start() {
    const view = await createTerminalView(this.element, preferences);
    this.view = view;
    this.term = view.term;
    const connection = new TerminalConnection(socketPath(this.target), {
      container: this.target.container,
      storageKey: `webshell.resume:workspace:${this.id}`,
      callbacks: {
        output: (bytes, drawn) => view.term.write(bytes, drawn),
        ready: (message, resumed, notes) => this.ready(message, resumed, notes),
        message: (message) => {
          if (message.type !== "watchers") return;
          showWatchers(this.bar, message.watchers);
          this.watchers = message.watchers;
          this.show();
        },
        state: (name, text) => this.setState(name, text),
        ended: (reason, details) => this.ended(reason, details),
      },
    });
    this.connection = connection;
    view.term.onData((data) => connection.sendText(data));
    // Some sequences (mouse reports in X10 mode) are bytes, not text.
    view.term.onBinary((data) => connection.sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    view.term.onResize(({ cols, rows }) => connection.resize(cols, rows));
    view.term.onSelectionChange(() => {
      const text = view.term.getSelection();
      if (text && navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
    });
    connection.size = { cols: view.term.cols, rows: view.term.rows };
    if (connection.load()) this.setState("reconnecting", SHORT.reconnecting);
    else this.setState("connecting", SHORT.connecting);
    connection.open();
  }

  ready(message, resumed, { inputLost = false } = {}) {
    if (this.closed) return;
    this.session = message.session;
    this.sessionLabel.textContent = message.session;
    this.endedBox.hidden = true;
    const running = `${message.container} · ${message.command.join(" ")}`;
    const state = inputLost
      ? gettext("reconnected; input sent as the connection dropped was lost")
      : resumed ? gettext("reconnected") : SHORT.connected;
    this.setState("connected", `${state} · ${running}`);
  }

  ended(reason, { message, resumable }) {
    if (this.closed) return;
    showWatchers(this.bar, []);
    this.watchers = [];
    this.reason = reason;
    const exited = message?.type === "exit";
    const state = resumable ? "disconnected" : exited ? "ended" : "error";
    this.setState(state, SHORT[state]);
    this.endedReason.textContent = reason;
    // A target that asks for a fresh authentication (or a second factor): the page that asks
    // for it, then back here (the tab opens again from the tree).
    const confirm = this.panel.querySelector(".ws-confirm");
    const asks = { step_up_required: root.dataset.reauthUrl, mfa_required: root.dataset.verifyUrl };
    const where = asks[message?.code];
    confirm.hidden = !where;
    if (where) confirm.href = `${where}?next=${encodeURIComponent(window.location.pathname)}`;
    this.reconnectButton.hidden = !resumable;
    this.endedBox.hidden = false;
    save(); // an ended tab is not brought back by a reload
    if (this === active && this.panel.contains(document.activeElement)) {
      (resumable ? this.reconnectButton : this.restartButton).focus();
    }
  }

  setState(name, text) {
    this.state = name;
    this.stateLabel.dataset.state = name;
    this.stateLabel.textContent = text;
    this.show();
  }

  // The tab's title: its target and state (the dot's colour follows the state).
  show() {
    this.item.dataset.state = this.state;
    this.stateText.textContent = SHORT[this.state] || this.state;
    const watched = this.watchers?.length
      ? ` · ${interpolate(gettext("watched by %(names)s"), { names: this.watchers.join(", ") })}` : "";
    this.item.dataset.watched = String(Boolean(watched));
    this.button.title = `${this.where} · ${SHORT[this.state] || this.state}${watched}`;
  }

  screenLines() {
    return this.term ? screenLines(this.term) : [];
  }
}

function socketPath(target) {
  return `${root.dataset.socketPrefix}${target.cluster}/${target.namespace}/${target.pod}/`;
}

function newId() {
  // Short and unique enough in one browser tab's storage (crypto.randomUUID needs HTTPS).
  let id;
  do id = Math.random().toString(36).slice(2, 10); while (tabs.some((tab) => tab.id === id));
  return id;
}

// Open a tab on ``target`` and show it; ``id`` is given when a reload brings a tab back.
async function open(target, { id = newId(), focusTerminal = true } = {}) {
  const tab = new Tab(target, id);
  tabs.push(tab);
  tablist.append(tab.item);
  panels.append(tab.panel);
  select(tab, { focusTerminal: false }); // shown while xterm.js measures its font
  save();
  await tab.start();
  if (focusTerminal && tab === active) tab.term.focus();
  return tab;
}

function select(tab, { focusTerminal = false, focusTab = false } = {}) {
  if (active !== tab) {
    for (const other of tabs) {
      const selected = other === tab;
      other.button.setAttribute("aria-selected", String(selected));
      other.button.tabIndex = selected ? 0 : -1;
      other.panel.hidden = !selected;
    }
    active = tab;
    // Hidden, it had no size: fit it to the panel now (the ResizeObserver would, a frame
    // later, after drawing one at the old size), and redraw what came meanwhile.
    if (tab.view) {
      tab.view.refit();
      tab.term.refresh(0, tab.term.rows - 1);
    }
    save();
  }
  empty.hidden = tabs.length > 0;
  document.title = tab ? `${tab.name} · ${pageTitle}` : pageTitle;
  if (focusTab) tab.button.focus();
  if (focusTerminal && tab.term) tab.term.focus();
}

// Close ``tab``: a live one only once the user confirms; its session then ends.
async function requestClose(tab) {
  if (tab.live && !(await confirmClose(tab))) {
    tab.button.focus();
    return;
  }
  tab.closed = true;
  tab.connection?.close();
  const index = tabs.indexOf(tab);
  tabs.splice(index, 1);
  tab.item.remove();
  tab.panel.remove();
  tab.term?.dispose();
  if (active === tab) {
    active = null;
    const next = tabs[Math.min(index, tabs.length - 1)];
    if (next) select(next, { focusTab: true });
    else select(null);
  }
  if (!tabs.length) filter.focus();
  save();
}

function confirmClose(tab) {
  closeDialog.querySelector("#ws-close-title").textContent =
    interpolate(gettext("Close %(name)s?"), { name: tab.name });
  closeDialog.querySelector("#ws-close-what").textContent = interpolate(
    gettext("Its session on %(where)s ends: the shell in the pod stops."), { where: tab.where });
  closeDialog.returnValue = "";
  closeDialog.showModal();
  return new Promise((resolve) => {
    closeDialog.addEventListener("close", () => resolve(closeDialog.returnValue === "close"), { once: true });
  });
}

// The tab bar's keys (the ARIA tabs pattern): arrows, Home and End move between tabs and show
// them; Delete closes one; Enter or the down arrow goes into its terminal.
tablist.addEventListener("keydown", (event) => {
  const index = tabs.findIndex((tab) => tab.button === document.activeElement);
  if (index < 0) return;
  const moves = {
    ArrowRight: (index + 1) % tabs.length,
    ArrowLeft: (index - 1 + tabs.length) % tabs.length,
    Home: 0,
    End: tabs.length - 1,
  };
  if (event.key in moves) {
    event.preventDefault();
    select(tabs[moves[event.key]], { focusTab: true });
  } else if (event.key === "Delete") {
    event.preventDefault();
    requestClose(tabs[index]);
  } else if (event.key === "Enter" || event.key === "ArrowDown") {
    event.preventDefault();
    select(tabs[index], { focusTerminal: true });
  }
});

// Clicking a pod (its first container) or one of its containers opens a tab.
document.querySelector(".ws-tree").addEventListener("click", (event) => {
  const button = event.target.closest("button.ws-open");
  if (!button) return;
  const { cluster, namespace, pod, container } = button.dataset;
  open({ cluster, namespace, pod, container });
});

// The filter: every word must be in the pod's cluster, namespace, name or containers; a
// namespace or cluster with no pod left is folded away. It also applies on load, for text
// restored by the browser.
function applyFilter() {
  const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
  let shown = 0;
  for (const pod of document.querySelectorAll(".ws-pod")) {
    const text = pod.dataset.search.toLowerCase();
    pod.hidden = !words.every((word) => text.includes(word));
    if (!pod.hidden) shown += 1;
  }
  for (const group of document.querySelectorAll(".ws-namespace, .ws-cluster")) {
    if (!group.querySelector(".ws-pod")) continue; // an error or "no pods" stays in view
    group.hidden = !group.querySelector(".ws-pod:not([hidden])");
  }
  document.getElementById("ws-no-match").hidden = !words.length || shown > 0;
}
filter.addEventListener("input", applyFilter);
applyFilter();

// Leaving (or reloading) the page while a session is live: the browser asks first.
window.addEventListener("beforeunload", (event) => {
  if (!tabs.some((tab) => tab.live)) return;
  event.preventDefault();
  event.returnValue = ""; // older browsers need it set
});

function save() {
  const kept = tabs.filter((tab) => !tab.closed && !["ended", "error"].includes(tab.state));
  try {
    storage.setItem(STORAGE_KEY, JSON.stringify({
      tabs: kept.map(({ id, target }) => ({ id, target })),
      active: active?.id ?? null,
    }));
  } catch {
    // Storage refused (private mode, full): the tabs work; a reload does not bring them back.
  }
}

function load() {
  try {
    const saved = JSON.parse(storage.getItem(STORAGE_KEY) || "null");
    return Array.isArray(saved?.tabs) ? saved : { tabs: [], active: null };
  } catch {
    return { tabs: [], active: null };
  }
}

window.workspaceApp = { // for tests and for people poking at the page
  tabs,
  get active() { return active; },
  open,
  tab: (name) => tabs.find((tab) => tab.name === name),
};

// A reload brings the tabs back, one after another (each is shown while it is drawn), then
// shows the one that was shown.
const saved = load();
for (const { id, target } of saved.tabs) {
  if (target?.cluster && target.namespace && target.pod && target.container) {
    await open(target, { id, focusTerminal: false });
  }
}
const shown = tabs.find((tab) => tab.id === saved.active) || tabs[tabs.length - 1];
if (shown) select(shown, { focusTerminal: true });
else empty.hidden = false;
window.workspaceApp.ready = true;
