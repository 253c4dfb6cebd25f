// Searching the terminal's output from the header: matches are highlighted as you type, the
// count says where you are ("3 of 12", "no match"), Enter and Shift+Enter (or the arrows)
// move to the next and previous match, and Escape gives the keyboard back to the terminal.
// The search addon reports its results only when ``decorations`` are given.
import { gettext, interpolate } from "./i18n.js";

// Match colours for each terminal theme (body[data-terminal-theme], set by settings.js).
const DECORATIONS = {
  dark: {
    matchBackground: "#6e5b00", matchBorder: "#9a6700", matchOverviewRuler: "#d29922",
    activeMatchBackground: "#bb8009", activeMatchBorder: "#f2cc60", activeMatchColorOverviewRuler: "#f2cc60",
  },
  light: {
    matchBackground: "#fff8c5", matchBorder: "#d4a72c", matchOverviewRuler: "#d4a72c",
    activeMatchBackground: "#ffd33d", activeMatchBorder: "#9a6700", activeMatchColorOverviewRuler: "#9a6700",
  },
};

// Wire the header's search form to ``addon`` (a loaded SearchAddon) of ``term``.
export function setUpSearch(term, addon) {
  const form = document.getElementById("terminal-search");
  if (!form) return;
  const input = document.getElementById("terminal-search-input");
  const count = document.getElementById("terminal-search-count");
  const previous = document.getElementById("terminal-search-previous");
  const next = document.getElementById("terminal-search-next");

  const options = (incremental = false) => ({
    incremental,
    decorations: DECORATIONS[document.body.dataset.terminalTheme] || DECORATIONS.dark,
  });

  addon.onDidChangeResults(({ resultIndex, resultCount }) => {
    if (!input.value) {
      count.textContent = "";
    } else if (resultCount === 0) {
      count.textContent = gettext("no match");
    } else if (resultIndex < 0) {
      count.textContent = interpolate(gettext("%(count)s+ matches"), { count: resultCount }); // over the addon's limit (1000): not placed
    } else {
      count.textContent = interpolate(gettext("%(index)s of %(count)s"), { index: resultIndex + 1, count: resultCount });
    }
    count.dataset.found = String(resultCount > 0);
  });

  // The count and the arrows show only while there is something to search: the header needs
  // the room for the session id the rest of the time.
  function showControls() {
    for (const control of [count, previous, next]) control.hidden = !input.value;
  }

  function find(forward, incremental = false) {
    showControls();
    if (!input.value) {
      addon.clearDecorations();
      count.textContent = "";
      return;
    }
    if (forward) addon.findNext(input.value, options(incremental));
    else addon.findPrevious(input.value, options());
  }

  // As you type: the first match from where the last one was (incremental keeps it if it
  // still matches).
  input.addEventListener("input", () => find(true, true));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    find(true);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault(); // also keeps the form from submitting: Shift+Enter goes back
      find(!event.shiftKey);
    } else if (event.key === "Escape") {
      event.preventDefault(); // a search field would clear itself; keep the term for later
      term.focus();
    }
  });
  previous.addEventListener("click", () => find(false));
  next.addEventListener("click", () => find(true));
  // Leaving the field shows the selection under the active match again (the addon's advice).
  input.addEventListener("blur", () => addon.clearActiveDecoration());
  showControls();
}
