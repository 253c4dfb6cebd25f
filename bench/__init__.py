"""Benchmarks of the web shell through the real stack: a WebSocket client → Daphne →
TerminalConsumer (with the write-ahead audit) → kubesim → a real shell in a PTY.

``python -m bench [--db sqlite|postgres|both] [--quick]`` (or ``make bench``) prints a table and
writes ``bench/results/<date>-<db>.json``. See the README's "Performance" section.
"""
