// TerminalConnection: one terminal's socket, as the browser protocol says (README, "The browser
// protocol"): the size first, stdin in 16 KiB frames, acks of what was drawn, and resuming.
//
// When the socket drops without the session having ended (no exit or error message), it
// reconnects by itself after 0.5, 1, 2, 4 and 8 s to the same URL with ?resume=<token>&offset=<N>
// (N: output bytes received), then stops and lets the page offer a button (retry()). The token
// is kept in sessionStorage so that a reload resumes too; keystrokes typed while away are held
// (up to HELD_INPUT bytes) and sent once the session is back. Keystrokes sent just before the
// drop may never have reached the server: every ready says how many stdin bytes the session
// has taken ("input"), and on a resume the page sends again those of its last HELD_INPUT bytes
// sent that the server did not take. The view (terminal.js, a workspace tab) gives the
// callbacks: output(bytes, drawn), ready(message, resumed, {inputLost}), message(message),
// state(name, text), ended(reason, {code, message, resumable}).
import { socketUrl } from "./common.js";
import { gettext, interpolate } from "./i18n.js";

const STDIN_CHUNK = 16 * 1024; // below the server's frame limit (64 KiB by default)
const ACK_EVERY = 64 * 1024; // tell the server what we have drawn, so it can send more
const BACKOFF = [500, 1000, 2000, 4000, 8000]; // ms between reconnect attempts
const HELD_INPUT = 64 * 1024; // keystrokes held while reconnecting, at most
// Errors after which the session still waits: another process holds it and the channel layer
// is down (1013); the page tries again with its token.
const RETRYABLE = new Set(["live_unavailable"]);
// Refusals of a resume that the person can meet and come back from (a second factor given in
// this login session, after a reload): the session waits out its grace, so its token is kept.
const MEETABLE = new Set(["mfa_required"]);

export const CLOSE_REASONS = {
  1000: gettext("The session ended."),
  1006: gettext("The connection was lost."),
  1011: gettext("The terminal failed because of a server error."),
  1012: gettext("The server is restarting; open a new session in a moment."),
  1013: gettext("The server cannot do that right now; try again in a moment."),
  4400: gettext("The request was not valid."),
  4401: gettext("You are not logged in."),
  4403: gettext("You may not open this terminal."),
  4404: gettext("There is no such pod or container."),
  4408: gettext("The session was idle too long."),
  4409: gettext("An auditor ended the session."),
  4410: gettext("The session reached its maximum duration."),
  4411: gettext("This terminal was opened again in another window."),
  4413: gettext("Too much data was sent at once."),
  4429: gettext("You have too many terminals open."),
  4502: gettext("The cluster could not run the terminal."),
  4503: gettext("The audit store is unavailable, so the session was stopped."),
};

export class TerminalConnection {
  // ``storageKey``: where the resume token is kept; two terminals on one pod in one page (a
  // workspace's tabs) need one each.
  constructor(socketPath, {
    container = "", command = "", storage = window.sessionStorage, storageKey = "", callbacks,
  }) {
    this.socketPath = socketPath;
    this.container = container;
    this.command = command;
    this.storage = storage;
    this.callbacks = callbacks;
    this.storageKey = storageKey || `webshell.resume:${socketPath}`;
    this.session = null;
    this.received = 0; // output bytes received in this session, over every socket
    this.resumes = 0;
    this.attempt = 0;
    this.held = [];
    this.heldBytes = 0;
    // Input sent since the last ready: its count, and its last HELD_INPUT bytes, to send again
    // what a dropped socket lost (see ready()). ``inputTaken``: the last ready's "input".
    this.inputTaken = null;
    this.inputSent = 0;
    this.sent = [];
    this.sentBytes = 0;
    this.socket = null;
    this.live = false; // a ready came and no end since
    this.over = false; // ended for good
    this.size = null;
    this.encoder = new TextEncoder();
    this.timer = null;
    this.token = null; // the token to resume with (also in sessionStorage, for a reload)
  }

  // Start: resume the session this tab had (a reload), else open a new one.
  open() {
    const saved = this.load();
    if (saved) {
      this.session = saved.session;
      this.connect(saved.token);
    } else {
      this.connect(null);
    }
  }

  // Open a new session, forgetting any to resume.
  restart() {
    this.forget();
    this.dropHeld();
    this.forgetSent(null);
    this.session = null;
    this.received = 0;
    this.over = false;
    this.connect(null);
  }

  // Try to resume again now (the page's "Reconnect" button).
  retry() {
    const saved = this.load();
    if (!saved) return this.restart();
    this.attempt = 0;
    this.over = false;
    this.connect(saved.token);
  }

  // Close on purpose (a tab closed in a workspace): the session ends within the grace.
  close() {
    this.over = true;
    clearTimeout(this.timer);
    this.forget();
    if (this.socket) this.socket.close(1000);
  }

  sendInput(bytes) {
    if (this.over) return;
    if (!this.live || this.socket?.readyState !== WebSocket.OPEN) {
      // Held until the session is back; beyond the bound, typing is dropped (and said so).
      if (this.heldBytes + bytes.length > HELD_INPUT) {
        this.callbacks.state("reconnecting", gettext("reconnecting… (input beyond 64 KiB is not kept)"));
        return;
      }
      this.held.push(bytes);
      this.heldBytes += bytes.length;
      return;
    }
    for (let start = 0; start < bytes.length; start += STDIN_CHUNK) {
      this.socket.send(bytes.subarray(start, start + STDIN_CHUNK));
    }
    this.inputSent += bytes.length;
    this.sent.push(bytes);
    this.sentBytes += bytes.length;
    while (this.sentBytes - this.sent[0].length >= HELD_INPUT) this.sentBytes -= this.sent.shift().length;
  }

  sendText(text) {
    this.sendInput(this.encoder.encode(text));
  }

  resize(cols, rows) {
    this.size = { cols, rows };
    if (this.live) this.sendJSON({ type: "resize", cols, rows });
  }

  // Internals.

  connect(token) {
    clearTimeout(this.timer);
    const url = socketUrl(this.socketPath);
    if (token) {
      url.searchParams.set("resume", token);
      url.searchParams.set("offset", String(this.received));
    } else {
      if (this.container) url.searchParams.set("container", this.container);
      if (this.command) url.searchParams.set("command", this.command);
    }
    const socket = (this.socket = new WebSocket(url));
    socket.binaryType = "arraybuffer";
    const generation = { drawn: 0, acked: 0, lastMessage: null, resuming: Boolean(token) };
    this.generation = generation;

    socket.addEventListener("open", () => {
      // A new session: the size goes first, as kubectl does, so the shell starts at the right
      // size. A resumed one is sized once it is back (frames before then are not its own).
      if (!token && this.size) this.sendJSON({ type: "resize", ...this.size });
      if (!token) this.callbacks.state("connecting", gettext("starting…"));
    });

    socket.addEventListener("message", (event) => {
      if (socket !== this.socket) return;
      if (event.data instanceof ArrayBuffer) {
        const bytes = new Uint8Array(event.data);
        this.received += bytes.length;
        this.callbacks.output(bytes, () => {
          if (socket !== this.socket) return; // drawn after the socket changed: not its bytes
          generation.drawn += bytes.length;
          if (generation.drawn - generation.acked >= ACK_EVERY) {
            this.sendJSON({ type: "ack", bytes: generation.drawn - generation.acked });
            generation.acked = generation.drawn;
          }
        });
        return;
      }
      const message = JSON.parse(event.data);
      generation.lastMessage = message;
      if (message.type === "ready") {
        this.ready(message, generation);
      } else if (message.type === "exit" || message.type === "error") {
        this.live = false;
        // The session waits, but this server cannot reach it now: try again (with the token).
        const keep = RETRYABLE.has(message.code)
          || (generation.resuming && MEETABLE.has(message.code));
        if (!keep) this.forget();
      } else {
        this.callbacks.message(message);
      }
    });

    socket.addEventListener("close", (event) => {
      if (socket !== this.socket) return;
      const wasLive = this.live;
      this.live = false;
      const last = generation.lastMessage;
      if (generation.resuming && last?.type === "error" && MEETABLE.has(last.code)) {
        // Not over: once the need is met (a reload goes through it), Reconnect resumes.
        this.callbacks.ended(last.message, { code: event.code, message: last, resumable: true });
        return;
      }
      const final = this.over || last?.type === "exit"
        || (last?.type === "error" && !RETRYABLE.has(last.code));
      if (!final && this.load() && (wasLive || generation.resuming)) {
        this.reconnectLater(event.code);
        return;
      }
      this.end(event.code, last);
    });
  }

  ready(message, generation) {
    const resumed = Boolean(message.resumed);
    this.session = message.session;
    this.live = true;
    this.attempt = 0;
    if (message.resume) this.save(message.resume);
    if (resumed) {
      this.resumes += 1;
      if (this.size) this.sendJSON({ type: "resize", ...this.size });
    }
    const { again, inputLost } = resumed ? this.lostInput(message.input) : { again: [], inputLost: false };
    this.forgetSent(Number.isInteger(message.input) ? message.input : null);
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    for (const bytes of [...again, ...held]) this.sendInput(bytes);
    this.callbacks.ready(message, resumed, { inputLost });
  }

  // What of the input sent before the drop the server did not take (``taken``: the resumed
  // ready's "input"): sent again if this page still has all of it, else nothing (half a
  // command line is worse than none) and ``inputLost``. Another page's input (a takeover)
  // makes the server's count larger: then nothing is owed.
  lostInput(taken) {
    if (!Number.isInteger(taken) || this.inputTaken === null) return { again: [], inputLost: false };
    let owed = this.inputTaken + this.inputSent - taken;
    if (owed <= 0) return { again: [], inputLost: false };
    if (owed > this.sentBytes) return { again: [], inputLost: true };
    const again = [];
    for (let i = this.sent.length - 1; owed > 0; i -= 1) {
      const bytes = this.sent[i];
      again.unshift(owed >= bytes.length ? bytes : bytes.subarray(bytes.length - owed));
      owed -= bytes.length;
    }
    return { again, inputLost: false };
  }

  forgetSent(taken) {
    this.inputTaken = taken;
    this.inputSent = 0;
    this.sent = [];
    this.sentBytes = 0;
  }

  reconnectLater(code) {
    if (this.attempt >= BACKOFF.length) {
      this.callbacks.state("disconnected", gettext("disconnected"));
      this.callbacks.ended(gettext("The connection was lost and could not be made again."), {
        code, resumable: true,
      });
      return;
    }
    const delay = BACKOFF[this.attempt];
    this.attempt += 1;
    this.callbacks.state("reconnecting", gettext("reconnecting…"));
    this.timer = setTimeout(() => {
      const saved = this.load();
      if (saved) this.connect(saved.token);
    }, delay);
  }

  end(code, last) {
    this.over = true;
    this.forget();
    this.dropHeld(); // typed for this session: never for the next one
    let reason = CLOSE_REASONS[code] || interpolate(gettext("The connection closed (%(code)s)."), { code });
    if (last?.type === "exit") reason = interpolate(gettext("The process exited with code %(code)s."), { code: last.code });
    else if (last?.type === "error") reason = last.message;
    this.callbacks.ended(reason, { code, message: last, resumable: false });
  }

  sendJSON(message) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  // The token to resume with: from sessionStorage (a reload), else the one kept in memory
  // (storage may refuse writes: a drop still resumes then).
  load() {
    try {
      const saved = JSON.parse(this.storage.getItem(this.storageKey) || "null");
      if (saved?.token) return saved;
    } catch {
      // unreadable: the memory's
    }
    return this.token ? { token: this.token, session: this.session } : null;
  }

  dropHeld() {
    this.held = [];
    this.heldBytes = 0;
  }

  save(token) {
    this.token = token;
    try {
      this.storage.setItem(this.storageKey, JSON.stringify({ token, session: this.session }));
    } catch {
      // Storage refused (private mode, full): a drop still resumes (the token is in memory);
      // a reload cannot.
    }
  }

  forget() {
    this.token = null;
    try {
      this.storage.removeItem(this.storageKey);
    } catch {
      // nothing kept
    }
  }
}
