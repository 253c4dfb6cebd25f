// Reading an xterm.js screen as text lines (for tests and for people poking at a page).
export function screenLines(term) {
  const buffer = term.buffer.active, lines = [];
  for (let y = 0; y < term.rows; y++) lines.push(buffer.getLine(buffer.viewportY + y)?.translateToString(true) ?? "");
  return lines;
}
