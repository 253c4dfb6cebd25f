// What the terminal page and the watch page share.

// The screen as text lines (for tests and for people poking at a page).
export function screenLines(term) {
  const buffer = term.buffer.active, lines = [];
  for (let y = 0; y < term.rows; y++) lines.push(buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? "");
  return lines;
}

// The ws:// or wss:// URL of a WebSocket path on this site.
export function socketUrl(path) {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
}

// A function that shows a connection state in ``label`` and keeps it on ``app`` for tests.
export function stateSetter(app, label) {
  return (state, text) => {
    app.state = state;
    label.dataset.state = state;
    label.textContent = text;
  };
}
