"""The site's Content-Security-Policy, as data: ``webshell/settings.py`` and the test settings
both take it from here (``webshell.middleware`` sends it)."""

from __future__ import annotations

SITE_POLICY: dict[str, list[str]] = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "connect-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Pages that need more than the site's policy, by view name (the rest of the site has none of
# these): xterm.js writes its layout and colours into <style> elements that it creates, and
# asciinema-player runs its terminal emulator as WebAssembly ('wasm-unsafe-eval' allows
# compiling WebAssembly, not eval() of JavaScript).
VIEW_POLICIES: dict[str, dict[str, list[str]]] = {
    "terminals:terminal": {"style-src-elem": ["'self'", "'unsafe-inline'"]},
    "terminals:session-watch": {"style-src-elem": ["'self'", "'unsafe-inline'"]},
    "terminals:session-replay": {"script-src": ["'self'", "'wasm-unsafe-eval'"]},
}
