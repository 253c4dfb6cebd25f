// "watched by alice, bob": the person at a terminal sees who is watching it. The server sends
// {"type":"watchers","watchers":["alice","bob"]} whenever that changes (TERMINALS["SHOW_WATCHERS"]);
// an empty list hides the badge.
import { gettext, interpolate } from "./i18n.js";

const SVG = "http://www.w3.org/2000/svg";

// An eye, drawn inline (no image request, no emoji font needed); screen readers skip it.
function eye() {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "16");
  svg.setAttribute("height", "16");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("focusable", "false");
  svg.classList.add("eye");
  const outline = document.createElementNS(SVG, "path");
  outline.setAttribute("d", "M1.5 12S5.5 4.5 12 4.5 22.5 12 22.5 12 18.5 19.5 12 19.5 1.5 12 1.5 12Z");
  const pupil = document.createElementNS(SVG, "circle");
  pupil.setAttribute("cx", "12");
  pupil.setAttribute("cy", "12");
  pupil.setAttribute("r", "3.5");
  svg.append(outline, pupil);
  return svg;
}

// The badge in ``header`` (its element with class "watchers"; made at the end if the page has
// none), showing ``names``; hidden when nobody watches. Returns the badge.
export function showWatchers(header, names) {
  let badge = header.querySelector(".watchers");
  if (!badge) {
    badge = document.createElement("span");
    badge.className = "watchers";
    header.append(badge);
  }
  if (!badge.querySelector(".eye")) {
    badge.setAttribute("role", "status");
    const text = document.createElement("span");
    text.className = "watchers-text";
    badge.replaceChildren(eye(), text);
  }
  const list = Array.isArray(names) ? names.map(String) : [];
  const text = list.length ? interpolate(gettext("watched by %(names)s"), { names: list.join(", ") }) : "";
  badge.querySelector(".watchers-text").textContent = text;
  badge.title = list.length
    ? interpolate(gettext("Your screen is being watched by %(names)s."), { names: list.join(", ") }) : "";
  badge.dataset.count = String(list.length);
  badge.hidden = list.length === 0;
  return badge;
}
