// "My sessions": ending a session stops its shell and whatever runs in it, so ask first.
for (const form of document.querySelectorAll("form.end-own")) {
  form.addEventListener("submit", (event) => {
    const question = `End your session on ${form.dataset.target}? Its shell and whatever runs in it stop.`;
    if (!window.confirm(question)) event.preventDefault();
  });
}
