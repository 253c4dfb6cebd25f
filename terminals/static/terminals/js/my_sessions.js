// "My sessions": ending a session stops its shell and whatever runs in it, so ask first.
import { gettext, interpolate } from "./i18n.js";
for (const form of document.querySelectorAll("form.end-own")) {
  form.addEventListener("submit", (event) => {
    const question = interpolate(gettext("End your session on %(pod)s? Its shell and whatever runs in it stop."),
      { pod: form.dataset.target });
    if (!window.confirm(question)) event.preventDefault();
  });
}
