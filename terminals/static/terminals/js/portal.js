// The portal's filter box: hides pods whose namespace, name or containers don't match.
// It also applies on load, for text typed early or restored by the browser's Back button.
const input = document.getElementById("pod-filter");

function applyFilter() {
  const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
  for (const row of document.querySelectorAll("tr.pod")) {
    const text = row.dataset.search.toLowerCase();
    row.hidden = !words.every((word) => text.includes(word));
  }
}

if (input) {
  input.addEventListener("input", applyFilter);
  applyFilter();
}
