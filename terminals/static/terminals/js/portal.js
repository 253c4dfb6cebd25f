// The portal's filter box: hides pods whose namespace, name or containers don't match.
const input = document.getElementById("pod-filter");
if (input) {
  input.addEventListener("input", () => {
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const row of document.querySelectorAll("tr.pod")) {
      const text = row.dataset.search.toLowerCase();
      row.hidden = !words.every((word) => text.includes(word));
    }
  });
}
