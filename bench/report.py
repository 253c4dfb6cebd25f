"""The results as Markdown tables ready for the README: one database's run in full
(:func:`render`), and both databases side by side against the targets of issue 10
(:func:`render_summary`).
"""

# The README's typography is deliberate: en dashes for ranges, multiplication and minus signs.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import statistics
from typing import Any

# Targets (2 cores; issue 10, "Scale"). Measured by the bench, never asserted in tests.
KNEE_TARGET = 500  # typing sessions at 5 keys/s with added p99 <= 20 ms
ADDED_P99_TARGET_MS = 5.0  # one session
IDLE_KIB_TARGET = 150.0
BESIDE_RATIO_TARGET = 2.0  # keystroke p99 with a streaming neighbour / alone
OUTPUT_RATIO_TARGET = 0.6  # web shell / kubectl exec (goal 0.8)
OUTPUT_RATIO_GOAL = 0.8
DB_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def fmt_spread(figure: dict[str, Any] | None, digits: int = 1) -> str:
    """Median (min–max), or the median alone when every round gave the same."""
    if not figure or figure.get("median") is None:
        return "n/a"
    median, low, high = figure["median"], figure["min"], figure["max"]
    if low == high:
        return fmt(float(median), digits)
    return f"{fmt(float(median), digits)} ({fmt(float(low), digits)}–{fmt(float(high), digits)})"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "**missed**")


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu(cpu: dict[str, float]) -> str:
    return " / ".join(f"{cpu[k]:g}" for k in ("daphne", "kubesim", "postgres") if k in cpu)


def _machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (
        f"{m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Debian {m['debian']}, "
        f"kernel {m['kernel']}, Python {m['python']}; {versions}"
    )


# One database, in full --------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    """Every figure of one database's run, as Markdown."""
    db = DB_NAMES.get(result["db"], result["db"])
    before, after = result.get("load_average_before"), result.get("load_average_after")
    out = [
        f"### {db} {result['database'].get('version', '')} — {result['date']}, "
        f"{result.get('kind', 'standard')} run",
        "",
        f"Machine: {_machine_line(result)}.",
    ]
    if before and after:
        out.append(
            f"Load average (1 min): {before[0]:.2f} before, {after[0]:.2f} after; "
            f"{fmt(result.get('elapsed_seconds'))} s in all"
            + (
                f"; CPU time stolen by the hypervisor: {result['stolen_percent']:.2f} %."
                if result.get("stolen_percent") is not None
                else "."
            )
        )
    out.append(
        "Figures: median (min–max) over alternated rounds; *load* is the 1-minute load "
        "average when each was taken."
    )
    for section in (_output, _keystrokes, _typing, _memory, _beside, _concurrency, _audit):
        text = section(result)
        if text:
            out += ["", text]
    trouble = result.get("daphne_log", {}).get("trouble_lines", 0)
    out += ["", f"Warning or error lines in Daphne's log: {trouble}."]
    return "\n".join(out)


def _output(result: dict[str, Any]) -> str:
    comparisons = result.get("output")
    if not comparisons:
        return ""
    rows = []
    for c in comparisons:
        ratio = c["web_over_kubectl"]["median"]
        rows.append(
            [
                c["workload"],
                fmt_spread(c["web_mib_per_s"]),
                fmt_spread(c["kubectl_mib_per_s"]),
                fmt_spread(c["bare_mib_per_s"]),
                fmt_spread(c["web_over_kubectl"], 2),
                fmt_spread(c["web_over_bare"], 2),
                fmt_spread(c["daphne_cpu_ms_per_mib"]),
                fmt_spread(c["load_1min"], 2),
                verdict(None if ratio is None else ratio >= OUTPUT_RATIO_TARGET)
                + ("" if c["all_intact"] else ", **bytes lost**"),
            ]
        )
    rounds = comparisons[0]["rounds"]
    return (
        f"**Output**, web shell beside `kubectl exec -i -t` and a bare aiohttp exec client on "
        f"the same pod ({rounds} alternated rounds; the ratio is taken round by round):\n\n"
        + table(
            [
                "workload",
                "web shell MiB/s",
                "kubectl MiB/s",
                "bare client MiB/s",
                "web ÷ kubectl",
                "web ÷ bare",
                "Daphne CPU ms/MiB",
                "load",
                f"≥ {OUTPUT_RATIO_TARGET:g}× kubectl",
            ],
            rows,
        )
    )


def _keystrokes(result: dict[str, Any]) -> str:
    k = result.get("keystrokes")
    if not k or "added_p99" not in k:
        return ""
    added = k["added_p99"]["median"]
    rows = [
        ["web shell", fmt_spread(k["web_p50"], 2), fmt_spread(k["web_p99"], 2), ""],
        ["direct to kubesim", fmt_spread(k["direct_p50"], 2), fmt_spread(k["direct_p99"], 2), ""],
        [
            "**added by the web shell**",
            fmt_spread(k["added_p50"], 2),
            fmt_spread(k["added_p99"], 2),
            f"p99 ≤ {ADDED_P99_TARGET_MS:g}: "
            + verdict(None if added is None else added <= ADDED_P99_TARGET_MS),
        ],
    ]
    return (
        f"**Keystrokes, one session**: {k['count']:,} sequential one-byte round trips into "
        f"`cat` on a raw TTY, web shell and straight to kubesim alternated, "
        f"{len(k['rounds'])} rounds (load {fmt_spread(k['load_1min'], 2)}):\n\n"
        + table(["", "p50 ms", "p99 ms", "target"], rows)
    )


def _typing(result: dict[str, Any]) -> str:
    t = result.get("typing")
    if not t:
        return ""
    rows = []
    for s in t["steps"]:
        web, direct, cpu, client = s["web"], s["direct"], s["cpu_percent"], s["client"]
        rows.append(
            [
                fmt(s["sessions"]),
                f"{fmt(web['typists'])}" + (f" ({web['failed']} failed)" if web["failed"] else ""),
                f"{fmt(web['sent_per_s'], 0)} / {fmt(web['echoed_per_s'], 0)}",
                f"{fmt(web['p50_ms'], 2)} / {fmt(web['p99_ms'], 2)}",
                f"{fmt(direct['p50_ms'], 2)} / {fmt(direct['p99_ms'], 2)}",
                f"{fmt(s['added_p50_ms'], 2)} / **{fmt(s['added_p99_ms'], 2)}**",
                fmt(cpu.get("daphne")),
                fmt(s["daphne_cpu_ms_per_keystroke"], 2),
                fmt(cpu.get("kubesim"))
                + (f" / {fmt(cpu['postgres'])}" if "postgres" in cpu else ""),
                f"{client['workers']}: {', '.join(f'{c:g}' for c in client['cpu_percent_each'])}",
                fmt(client["send_lateness_p99_ms"], 2),
                fmt(s["load_1min"], 2),
            ]
        )
    knee = t["knee"]
    lost = sum(s["web"]["lost"] for s in t["steps"])
    note = (
        f"**Knee** (the largest N whose added p99 ≤ {t['limit_added_p99_ms']:g} ms): "
        f"**{fmt(knee) if knee else 'below ' + str(t['steps'][0]['sessions'])}** "
        f"(target ≥ {KNEE_TARGET}: {verdict(knee is not None and knee >= KNEE_TARGET)})"
        + ("; the ramp stopped at the first N past it." if t["stopped_past_knee"] else ".")
    )
    if t.get("harness_limited"):
        note += (
            f" At N = {t['steps'][-1]['sessions']} the direct typists' own p99 exceeded "
            f"{t['limit_added_p99_ms']:g} ms: the machine (kubesim, the bench client, other "
            "work) was the limit there, not only the web shell."
        )
    if lost:
        note += f" {lost} keystrokes never came back within the drain time (counted as slowest)."
    alone = t.get("without_daphne")
    if alone:
        cpu, client = alone["cpu_percent"], alone["client"]
        note += (
            f"\n\n**The machine without the web shell** at N = {fmt(alone['typists'])}: as many "
            f"typists straight to kubesim, nobody through Daphne: p50 / p99 "
            f"{fmt(alone['direct']['p50_ms'], 2)} / {fmt(alone['direct']['p99_ms'], 2)} ms; "
            f"kubesim {fmt(cpu.get('kubesim'))} % and the bench client "
            f"{fmt(sum(client['cpu_percent_each']))} % of one core (load "
            f"{fmt(alone['load_1min'], 2)}), before Daphne or the database take any."
        )
    return (
        f"**Typing ramp**: N sessions typing into `cat` at 5 keys/s each (open loop, "
        f"{fmt(t['window_seconds'])} s per N, sessions kept open as N grows), beside direct "
        "typists to kubesim in the same window; *added* = web shell percentile − direct "
        "percentile. CPU in % of one core.\n\n"
        + table(
            [
                "N",
                "open",
                "keys/s typed / echoed",
                "web shell p50 / p99 ms",
                "direct p50 / p99 ms",
                "added p50 / p99 ms",
                "Daphne CPU %",
                "Daphne CPU ms/key",
                "kubesim" + (" / PostgreSQL" if result["db"] == "postgres" else "") + " CPU %",
                "client processes: CPU %",
                "client send lag p99 ms",
                "load",
            ],
            rows,
        )
        + "\n\n"
        + note
    )


def _memory(result: dict[str, Any]) -> str:
    m = result.get("memory")
    if not m or "steps" not in m:
        return ""
    rows = []
    for s in m["steps"]:
        rows.append(
            [
                fmt(s["sessions"]),
                fmt(s["opened"]) + (f" ({len(s['failures'])}+ failed)" if s["failures"] else ""),
                f"**{fmt(s['kib_per_session'])}**",
                fmt(s["kubesim_kib_per_session"]),
                fmt(s["shells_pss_kib_per_session"]),
                f"{fmt(s['open_seconds'])} s; {fmt(s['ready_ms_p50'], 0)} ms",
                fmt(s["load_1min"], 2),
                verdict(s["kib_per_session"] <= IDLE_KIB_TARGET),
            ]
        )
    return (
        f"**Memory per idle session**: RSS growth ÷ N from one baseline (Daphne "
        f"{fmt(m['daphne_rss_before_kib'])} KiB after a warm-up session), each session having "
        f"answered a command; opened at most "
        f"{result.get('limits', {}).get('opening_at_once', '?')} at a time{_overflows(m)}:\n\n"
        + table(
            [
                "N",
                "open",
                "Daphne KiB/session",
                "kubesim KiB/session",
                "pod shells KiB/session (PSS)",
                "all open after; ready p50",
                "load",
                f"≤ {IDLE_KIB_TARGET:g} KiB",
            ],
            rows,
        )
    )


def _overflows(memory: dict[str, Any]) -> str:
    """Connections dropped by full listen backlogs meanwhile (machine-wide, others' too)."""
    dropped = sum(s.get("listen_overflows", 0) for s in memory["steps"])
    return (
        f" (the kernel counted {dropped} listen overflows meanwhile, machine-wide)"
        if dropped
        else ""
    )


def _beside(result: dict[str, Any]) -> str:
    b = result.get("beside_stream")
    if not b:
        return ""

    def row(name: str, windows: list[dict[str, Any]]) -> list[str]:
        def figure(key: str, sub: str | None = None) -> str:
            known = [v for w in windows if (v := w[key][sub] if sub else w[key]) is not None]
            if not known:
                return "n/a"
            middle = statistics.median(known)
            return fmt_spread({"median": middle, "min": min(known), "max": max(known)}, 2)

        return [
            name,
            figure("web", "p50_ms"),
            figure("web", "p99_ms"),
            figure("direct", "p99_ms"),
            figure("added_p99_ms"),
            figure("load_1min"),
        ]

    ratio = b["p99_ratio"]["median"]
    rounds = b["rounds"]
    return (
        f"**A streaming session beside {b['typists']} typists** (5 keys/s each, "
        f"{fmt(b['window_seconds'])} s windows, alone and with one session printing a file "
        f"without end on a raw TTY, {len(rounds)} alternated pairs; the stream ran at "
        f"{fmt_spread(b['stream_mib_per_s'])} MiB/s):\n\n"
        + table(
            ["", "web shell p50 ms", "web shell p99 ms", "direct p99 ms", "added p99 ms", "load"],
            [
                row("typists alone", [r["alone"] for r in rounds]),
                row("beside the stream", [r["with_stream"] for r in rounds]),
            ],
        )
        + f"\n\np99 beside the stream ÷ alone: **{fmt_spread(b['p99_ratio'], 2)}** "
        f"(target < {BESIDE_RATIO_TARGET:g}×: "
        f"{verdict(None if ratio is None else ratio < BESIDE_RATIO_TARGET)}); added p99 beside "
        f"the stream ÷ alone: {fmt_spread(b.get('added_p99_ratio'), 2)} (the direct typists "
        "share kubesim and the machine with the stream, not Daphne)."
    )


def _concurrency(result: dict[str, Any]) -> str:
    rows = []
    for c in result.get("concurrency", []):
        rows.append(
            [
                f"{c['sessions']} × {c['mib_each']} MiB",
                fmt(c["aggregate_mib_per_s"]),
                fmt(c["per_session_mib_per_s_median"], 2),
                f"{c['completed']}/{c['sessions']}",
                _cpu(c["cpu_percent"]),
                fmt_spread(c.get("load_1min"), 2),
            ]
        )
    if not rows:
        return ""
    return "**Sessions streaming at once** (raw TTY, `head -c` of the data file):\n\n" + table(
        [
            "sessions",
            "aggregate MiB/s",
            "per session MiB/s",
            "completed",
            "CPU % Daphne / kubesim" + (" / PostgreSQL" if result["db"] == "postgres" else ""),
            "load",
        ],
        rows,
    )


def _audit(result: dict[str, Any]) -> str:
    comparisons = result.get("output")
    if not comparisons:
        return ""
    rows = []
    for c in comparisons:
        web = sorted(c["runs"]["web"], key=lambda r: r["mib_per_s"])
        run = web[len(web) // 2]  # the median run
        rows.append(
            [
                c["workload"],
                fmt(run["frames_out"]),
                fmt(run["mean_output_frame_bytes"]),
                fmt(run["frames_per_commit"]),
                fmt(run["store_bytes_per_mib"]),
                _cpu(run["cpu_percent"]),
            ]
        )
    return "**The audit during the web shell's median output run**:\n\n" + table(
        [
            "workload",
            "output frames stored",
            "mean frame, bytes",
            "frames per commit",
            "bytes stored per MiB",
            "CPU % Daphne / kubesim" + (" / PostgreSQL" if result["db"] == "postgres" else ""),
        ],
        rows,
    )


# Both databases against the targets --------------------------------------------------------------


def render_summary(results: list[dict[str, Any]]) -> str:
    """The README's table: one column per database, the targets of issue 10 beside."""
    if not results:
        return ""
    header = ["", *(DB_NAMES.get(r["db"], r["db"]) for r in results), "target"]
    rows: list[list[str]] = []

    def add(name: str, target: str, figure: Any) -> None:
        cells = []
        for r in results:
            try:
                cells.append(figure(r))
            except (KeyError, IndexError, TypeError):
                cells.append("n/a")
        rows.append([name, *cells, target])

    def knee(r: dict[str, Any]) -> str:
        t = r["typing"]
        if t["knee"] is None:
            return f"< {t['steps'][0]['sessions']}"
        return f"**{t['knee']}** ({t['knee'] * 5:,} keys/s)"

    def at_knee(r: dict[str, Any], key: str, digits: int = 2) -> str:
        t = r["typing"]
        step = next((s for s in t["steps"] if s["sessions"] == t["knee"]), t["steps"][0])
        return f"{fmt(step[key], digits)} (N = {step['sessions']})"

    def steps(r: dict[str, Any]) -> str:
        return ", ".join(
            f"{s['sessions']}: {fmt(s['added_p99_ms'], 1)}" for s in r["typing"]["steps"]
        )

    def memory(r: dict[str, Any], key: str) -> str:
        return " / ".join(f"{fmt(s[key])}" for s in r["memory"]["steps"])

    def output(r: dict[str, Any], index: int, key: str, digits: int = 2) -> str:
        return fmt_spread(r["output"][index][key], digits)

    add("typing sessions at 5 keys/s with added p99 ≤ 20 ms (the knee)", f"≥ {KNEE_TARGET}", knee)
    add("added keystroke p99 by N, ms", "", steps)

    def without_daphne(r: dict[str, Any]) -> str:
        alone = r["typing"]["without_daphne"]
        if not alone:
            return "–"
        cpu = alone["cpu_percent"].get("kubesim", 0.0) + sum(alone["client"]["cpu_percent_each"])
        return (
            f"N = {alone['typists']}: {fmt(cpu, 0)} % "
            f"(their p99 {fmt(alone['direct']['p99_ms'], 1)} ms)"
        )

    add(
        "kubesim + bench client CPU, typists straight to kubesim (no web shell), % of a core",
        "",
        without_daphne,
    )
    add(
        "Daphne CPU per keystroke at the knee, ms",
        "",
        lambda r: at_knee(r, "daphne_cpu_ms_per_keystroke"),
    )
    add(
        "one session: added keystroke p50 / p99, ms",
        f"p99 ≤ {ADDED_P99_TARGET_MS:g}",
        lambda r: (
            f"{fmt_spread(r['keystrokes']['added_p50'], 2)} / "
            f"**{fmt_spread(r['keystrokes']['added_p99'], 2)}**"
        ),
    )
    add(
        "one session: web shell p99 / direct p99, ms",
        "",
        lambda r: (
            f"{fmt_spread(r['keystrokes']['web_p99'], 2)} / "
            f"{fmt_spread(r['keystrokes']['direct_p99'], 2)}"
        ),
    )
    sizes = " / ".join(str(s) for s in results[0].get("sizes", {}).get("idle_sessions", []))
    add(
        f"Daphne RSS per idle session at {sizes} sessions, KiB",
        f"≤ {IDLE_KIB_TARGET:g}",
        lambda r: memory(r, "kib_per_session"),
    )
    add(
        f"kubesim per session at {sizes}: its process's RSS + the pod shells' PSS, KiB",
        "",
        lambda r: " / ".join(
            f"{fmt(s['kubesim_kib_per_session'])} + {fmt(s['shells_pss_kib_per_session'])}"
            for s in r["memory"]["steps"]
        ),
    )
    add(
        "keystroke p99 beside a streaming session ÷ alone (added p99 ÷ alone)",
        f"< {BESIDE_RATIO_TARGET:g}×",
        lambda r: (
            f"**{fmt_spread(r['beside_stream']['p99_ratio'], 2)}** "
            f"({fmt_spread(r['beside_stream']['added_p99_ratio'], 2)})"
        ),
    )
    for index in range(len(results[0].get("output", []))):
        name = results[0]["output"][index]["workload"]
        add(
            f"{name}: web shell ÷ kubectl exec",
            f"≥ {OUTPUT_RATIO_TARGET:g} (goal {OUTPUT_RATIO_GOAL:g})",
            lambda r, i=index: f"**{output(r, i, 'web_over_kubectl')}**",
        )
        add(
            f"{name}: MiB/s web shell / kubectl / bare client",
            "",
            lambda r, i=index: " / ".join(
                output(r, i, f"{k}_mib_per_s", 1) for k in ("web", "kubectl", "bare")
            ),
        )
        add(
            f"{name}: Daphne CPU per MiB, ms",
            "",
            lambda r, i=index: output(r, i, "daphne_cpu_ms_per_mib", 0),
        )
    add(
        "1-minute load average: before / after the run",
        "",
        lambda r: f"{r['load_average_before'][0]:.2f} / {r['load_average_after'][0]:.2f}",
    )
    add(
        "CPU time stolen by the hypervisor over the run, %",
        "",
        lambda r: fmt(r["stolen_percent"], 2),
    )
    add(
        "warning or error lines in Daphne's log",
        "",
        lambda r: fmt(r["daphne_log"]["trouble_lines"]),
    )
    first = results[0]
    title = (
        f"Benchmark of {first['date']} ({first.get('kind', 'standard')} run). Machine: "
        f"{_machine_line(first)}. Figures: median (min–max) of alternated rounds."
    )
    return title + "\n\n" + table(header, rows)
