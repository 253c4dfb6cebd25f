// Terminal settings kept per user (font size and theme): the options a terminal starts with,
// and the header's settings panel, which applies a change at once and saves it
// (terminals/preferences.py holds the bounds and answers at data.url).
import { gettext, interpolate } from "./i18n.js";

export const MIN_FONT_SIZE = 10;
export const MAX_FONT_SIZE = 24;
const DEFAULTS = { font_size: 14, theme: "dark", url: null };

export const FONT_FAMILY = '"DejaVu Sans Mono", "Noto Sans Mono", ui-monospace, monospace';
// DejaVu Sans Mono draws "_" just below its own descent. The DOM renderer clips each row to the
// font's ascent + descent when the line height is 1, so underscores vanished at 10, 14, 19 and
// 23 px (xterm.js#4067; WebGL draws them). 1.1 leaves them a pixel row at every size offered.
export const LINE_HEIGHT = 1.1;

export const THEMES = {
  dark: {
    background: "#0d1117", foreground: "#e6edf3", cursor: "#e6edf3", cursorAccent: "#0d1117",
    selectionBackground: "#264f78",
  },
  // GitHub's light palette: the ANSI colours stay readable on white (xterm's defaults do not).
  light: {
    background: "#ffffff", foreground: "#1f2328", cursor: "#1f2328", cursorAccent: "#ffffff",
    selectionBackground: "#b6d7ff",
    black: "#24292f", red: "#cf222e", green: "#116329", yellow: "#4d2d00",
    blue: "#0969da", magenta: "#8250df", cyan: "#1b7c83", white: "#6e7781",
    brightBlack: "#57606a", brightRed: "#a40e26", brightGreen: "#1a7f37", brightYellow: "#633c01",
    brightBlue: "#218bff", brightMagenta: "#a475f9", brightCyan: "#3192aa", brightWhite: "#8c959f",
  },
};

// The user's preferences as the page was rendered with them (json_script), else the defaults.
export function readPreferences(id = "terminal-preferences") {
  const script = document.getElementById(id);
  return { ...DEFAULTS, ...(script ? JSON.parse(script.textContent) : {}) };
}

// The same, for pages that do not render them: fetched from ``url``; the defaults on failure.
export async function fetchPreferences(url) {
  if (!url) return { ...DEFAULTS };
  try {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.ok) return { ...DEFAULTS, ...(await response.json()), url };
  } catch (error) {
    console.info("webshell: terminal settings unavailable, using the defaults:", error);
  }
  return { ...DEFAULTS, url };
}

// The Terminal options that follow from the preferences (spread them into ``new Terminal``);
// the page around the terminal takes the same theme.
export function terminalOptions(preferences) {
  showTheme(preferences.theme);
  return {
    fontFamily: FONT_FAMILY,
    fontSize: preferences.font_size,
    lineHeight: LINE_HEIGHT,
    theme: { ...(THEMES[preferences.theme] || THEMES.dark) },
  };
}

// The page around the terminal follows its theme (terminals.css reads this attribute).
function showTheme(theme) {
  document.body.dataset.terminalTheme = THEMES[theme] ? theme : "dark";
}

// The header's settings panel: the button opens it; changes apply at once and are saved.
// ``refit`` is called after the font size changes (the number of rows and columns follows).
export function setUpSettings(term, refit, preferences) {
  const button = document.getElementById("terminal-settings-button");
  const panel = document.getElementById("terminal-settings");
  if (!button || !panel) return;
  const sizeLabel = document.getElementById("terminal-font-size");
  const smaller = document.getElementById("terminal-font-smaller");
  const larger = document.getElementById("terminal-font-larger");
  const themeSelect = document.getElementById("terminal-theme");
  const status = document.getElementById("terminal-settings-status");
  const current = { font_size: preferences.font_size, theme: preferences.theme };
  let saveTimer = null;

  function show() {
    sizeLabel.textContent = `${current.font_size} px`;
    smaller.disabled = current.font_size <= MIN_FONT_SIZE;
    larger.disabled = current.font_size >= MAX_FONT_SIZE;
    themeSelect.value = current.theme;
  }

  function open(opened) {
    panel.hidden = !opened;
    button.setAttribute("aria-expanded", String(opened));
    if (opened) (smaller.disabled ? larger : smaller).focus();
  }

  // A burst of clicks is one request: the last state wins.
  function save() {
    clearTimeout(saveTimer);
    status.textContent = gettext("Saving…");
    saveTimer = setTimeout(async () => {
      const body = JSON.stringify(current);
      try {
        const response = await fetch(preferences.url, {
          method: "POST", body, credentials: "same-origin",
          headers: {
            "Content-Type": "application/json", Accept: "application/json",
            "X-CSRFToken": panel.querySelector("[name=csrfmiddlewaretoken]").value,
          },
        });
        const answer = await response.json().catch(() => ({}));
        if (body !== JSON.stringify(current)) return; // a newer change is on its way
        status.textContent = response.ok ? gettext("Saved")
          : interpolate(gettext("Not saved: %(error)s"), { error: answer.error || `HTTP ${response.status}` });
      } catch (error) {
        status.textContent = gettext("Not saved: the server could not be reached.");
      }
    }, 250);
  }

  function setFontSize(size) {
    current.font_size = Math.min(MAX_FONT_SIZE, Math.max(MIN_FONT_SIZE, size));
    term.options.fontSize = current.font_size;
    refit();
    show();
    save();
  }

  button.addEventListener("click", () => open(panel.hidden));
  smaller.addEventListener("click", () => setFontSize(current.font_size - 1));
  larger.addEventListener("click", () => setFontSize(current.font_size + 1));
  themeSelect.addEventListener("change", () => {
    current.theme = themeSelect.value;
    term.options.theme = { ...THEMES[current.theme] };
    showTheme(current.theme);
    save();
  });
  panel.addEventListener("submit", (event) => event.preventDefault());
  panel.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    event.preventDefault();
    open(false);
    button.focus();
  });
  // A click elsewhere closes the panel, as menus do.
  document.addEventListener("click", (event) => {
    if (!panel.hidden && !panel.contains(event.target) && !button.contains(event.target)) open(false);
  });
  show();
}
