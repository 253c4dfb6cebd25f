// The watch page: a read-only xterm.js fed with the session's current screen, then its
// output as it is committed. Nothing typed here reaches the session.
import { screenLines, socketUrl, stateSetter } from "./common.js";
import { gettext, interpolate } from "./i18n.js";
import { fetchPreferences } from "./settings.js";
import { createTerminalView } from "./view.js";

const element = document.getElementById("terminal");
const stateLabel = document.getElementById("watch-state");
// The watcher's own font size and theme (settings.js), with its underscore-safe line height.
const preferences = await fetchPreferences(element.dataset.preferencesUrl);
// The size is the watched session's (snapshot and resize messages), not the window's.
const { term } = await createTerminalView(element, preferences, {
  options: { disableStdin: true, cursorBlink: false }, fit: false,
});

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
    setState("connected", gettext("live"));
  } else if (message.type === "resize") {
    term.resize(message.cols, message.rows);
  } else if (message.type === "ended") {
    // An auditor's end: what its user was told, reason included.
    app.reason = message.ended_by
      ? message.message || interpolate(gettext("%(user)s ended the session."), { user: message.ended_by })
      : message.exit_code === null
        ? interpolate(gettext("The session ended (%(reason)s)."), { reason: message.reason })
        : interpolate(gettext("The session ended (%(reason)s, exit code %(code)s)."),
          { reason: message.reason, code: message.exit_code });
  } else if (message.type === "error") {
    app.reason = message.message;
  }
});

socket.addEventListener("close", (event) => {
  setState(last?.type === "ended" ? "ended" : "error", last?.type === "ended" ? gettext("ended") : gettext("closed"));
  document.getElementById("watch-ended-reason").textContent = app.reason || interpolate(gettext("The connection closed (%(code)s)."), { code: event.code });
  document.getElementById("watch-ended").hidden = false;
  const end = document.getElementById("end-session");
  if (end) {
    end.disabled = true; // nothing left to end
    end.textContent = gettext("End session");
  }
  document.getElementById("end-dialog")?.close();
});

// "End session": a dialog asks for the reason (required; the session's user is shown it and the
// record keeps it), then posts it without leaving the page, so the watcher sees the session end.
const endButton = document.getElementById("end-session");
const dialog = document.getElementById("end-dialog");
if (endButton && dialog) {
  const form = document.getElementById("end-form");
  const reason = document.getElementById("end-reason");
  const count = document.getElementById("end-reason-count");
  const error = document.getElementById("end-error");
  const confirm = document.getElementById("end-confirm");
  const showError = (text) => {
    error.textContent = text;
    error.hidden = false;
  };
  const countChars = () => { count.textContent = `${reason.value.length} / ${reason.maxLength}`; };
  reason.addEventListener("input", () => { countChars(); error.hidden = true; });
  endButton.addEventListener("click", () => {
    error.hidden = true;
    dialog.showModal();
    reason.focus();
  });
  document.getElementById("end-cancel").addEventListener("click", () => dialog.close());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!reason.value.trim()) {
      // "required" lets a reason of only spaces through; the server would refuse it too.
      showError(gettext("Say why you end the session: the reason is required."));
      reason.focus();
      return;
    }
    confirm.disabled = true;
    confirm.textContent = gettext("Ending…");
    let result;
    try {
      const response = await fetch(form.action, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      result = await response.json().catch(() => ({ ok: false, message: interpolate(gettext("Could not end the session (HTTP %(status)s)."), { status: response.status }) }));
    } catch {
      result = { ok: false, message: gettext("The server could not be reached; the session goes on.") };
    }
    confirm.disabled = false;
    confirm.textContent = gettext("End");
    if (!result.ok) {
      showError(result.message);
      return;
    }
    dialog.close();
    app.endRequested = true;
    endButton.disabled = true;
    endButton.textContent = gettext("Ending…");
  });
  countChars();
}
