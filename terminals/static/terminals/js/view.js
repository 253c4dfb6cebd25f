// One xterm.js terminal as every page draws it (the terminal page, a workspace tab, the watch
// page): the user's font and theme (settings.js), the fit, search, web-links and unicode11
// addons, and WebGL where the browser has it, the DOM renderer otherwise.
import { Terminal } from "../vendor/xterm/xterm.mjs";
import { FitAddon } from "../vendor/xterm/addon-fit.mjs";
import { SearchAddon } from "../vendor/xterm/addon-search.mjs";
import { Unicode11Addon } from "../vendor/xterm/addon-unicode11.mjs";
import { WebLinksAddon } from "../vendor/xterm/addon-web-links.mjs";
import { terminalOptions } from "./settings.js";

// A terminal opened in ``element`` with ``preferences`` (settings.js). ``options`` go to
// ``new Terminal`` over the defaults; with ``fit`` (the default) the terminal fills
// ``element`` and follows its size, which a page whose size comes from elsewhere (the watch
// page follows the watched session's) turns off. Returns {term, fit, search, renderer,
// refit}; ``refit()`` does nothing while ``element`` is not shown (a background tab), as
// there is no size to fit then: call it when the element is shown again.
export async function createTerminalView(element, preferences, { options = {}, fit: fits = true } = {}) {
  const term = new Terminal({
    allowProposedApi: true, // needed by the unicode11 addon
    cursorBlink: true,
    scrollback: 10000,
    ...terminalOptions(preferences), // font, line height, theme
    ...options,
  });
  const fit = new FitAddon();
  const search = new SearchAddon();
  term.loadAddon(fit);
  term.loadAddon(search);
  term.loadAddon(new WebLinksAddon());
  term.loadAddon(new Unicode11Addon());
  term.unicode.activeVersion = "11";
  term.open(element);

  // WebGL draws faster where the browser has it; the DOM renderer is the fallback. A lost
  // context (the GPU reset, or too many terminals in one page) goes back to the DOM renderer.
  let renderer = "dom";
  try {
    const { WebglAddon } = await import("../vendor/xterm/addon-webgl.mjs");
    const webgl = new WebglAddon();
    webgl.onContextLoss(() => {
      webgl.dispose();
      view.renderer = "dom";
    });
    term.loadAddon(webgl);
    renderer = "webgl";
  } catch (error) {
    console.info("webshell: WebGL renderer unavailable, using the DOM renderer:", error);
  }

  const refit = () => {
    if (!fits || !element.isConnected || element.offsetParent === null) return; // not shown
    fit.fit();
  };
  const view = { term, fit, search, renderer, refit };
  if (fits) {
    refit();
    new ResizeObserver(refit).observe(element);
  }
  return view;
}
