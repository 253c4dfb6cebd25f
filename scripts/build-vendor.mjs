// Copies the front-end packages the pages load from node_modules into the app's static
// vendor folder. No bundler: the pages are plain ES modules. The output is git-ignored and
// rebuilt by `make` (and shipped inside the wheel by `make dist`).
import { cpSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "terminals", "static", "terminals", "vendor");

// [package, file inside the package, name in vendor/]
const files = [
  ["@xterm/xterm", "lib/xterm.mjs", "xterm/xterm.mjs"],
  ["@xterm/xterm", "lib/xterm.mjs.map", "xterm/xterm.mjs.map"],
  ["@xterm/xterm", "css/xterm.css", "xterm/xterm.css"],
  ["@xterm/xterm", "LICENSE", "xterm/LICENSE"],
  ["@xterm/addon-fit", "lib/addon-fit.mjs", "xterm/addon-fit.mjs"],
  ["@xterm/addon-fit", "lib/addon-fit.mjs.map", "xterm/addon-fit.mjs.map"],
  ["@xterm/addon-search", "lib/addon-search.mjs", "xterm/addon-search.mjs"],
  ["@xterm/addon-search", "lib/addon-search.mjs.map", "xterm/addon-search.mjs.map"],
  ["@xterm/addon-unicode11", "lib/addon-unicode11.mjs", "xterm/addon-unicode11.mjs"],
  ["@xterm/addon-unicode11", "lib/addon-unicode11.mjs.map", "xterm/addon-unicode11.mjs.map"],
  ["@xterm/addon-web-links", "lib/addon-web-links.mjs", "xterm/addon-web-links.mjs"],
  ["@xterm/addon-web-links", "lib/addon-web-links.mjs.map", "xterm/addon-web-links.mjs.map"],
  ["@xterm/addon-webgl", "lib/addon-webgl.mjs", "xterm/addon-webgl.mjs"],
  ["@xterm/addon-webgl", "lib/addon-webgl.mjs.map", "xterm/addon-webgl.mjs.map"],
  ["asciinema-player", "dist/bundle/asciinema-player.min.js", "asciinema-player/asciinema-player.min.js"],
  ["asciinema-player", "dist/bundle/asciinema-player.css", "asciinema-player/asciinema-player.css"],
  ["asciinema-player", "LICENSE", "asciinema-player/LICENSE"],
];

rmSync(out, { recursive: true, force: true });
for (const [pkg, file, target] of files) {
  const source = join(root, "node_modules", pkg, file);
  if (!existsSync(source)) {
    console.error(`build-vendor: ${source} is missing; run "npm ci" first`);
    process.exit(1);
  }
  const dest = join(out, target);
  mkdirSync(dirname(dest), { recursive: true });
  cpSync(source, dest);
}
console.log(`build-vendor: ${files.length} files in ${out}`);
