"""The results table, and what it is checked against (shared/reference/performance-notes.md)."""

from __future__ import annotations

from typing import Any

# Targets from the reference notes (2 cores). PostgreSQL runs with server_side_binding here.
THROUGHPUT_TARGET = {"sqlite": 25.0, "postgres": 80.0}
KEYSTROKE_P99_TARGET_MS = 10.0
IDLE_KIB_TARGET = 100.0


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def rows(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measurement, figure, target and verdict) for one database's results."""
    db = result["db"]
    out: list[tuple[str, str, str]] = []
    tp = result.get("throughput")
    if tp:
        target = THROUGHPUT_TARGET[db]
        each = ", ".join(_fmt(r["mib_per_s"]) for r in tp["runs"])
        out.append(
            (
                f"1 session, {tp['mib']} MiB, MiB/s (median of {len(tp['runs'])})",
                f"{_fmt(tp['mib_per_s'])} (runs {each})",
                f">= {target:g} {_verdict(tp['mib_per_s'] >= target)}",
            )
        )
        # The audit figures of the median run, the one whose MiB/s is reported.
        run = sorted(tp["runs"], key=lambda r: r["mib_per_s"])[len(tp["runs"]) // 2]
        cpu = ", ".join(f"{k} {v:g}%" for k, v in tp["cpu_percent"].items())
        out.append(("  CPU during the stream (% of one core)", cpu, ""))
        out.append(
            (
                "  audit: output frames, mean frame, frames/commit",
                f"{run['frames_out']}, {_fmt(run['mean_output_frame_bytes'])} B, "
                f"{_fmt(run['frames_per_commit'])}",
                "",
            )
        )
        out.append(("  store bytes per MiB of output", _fmt(tp["store_bytes_per_mib"]), ""))
    ks = result.get("kubesim_alone")
    if ks:
        out.append(("kubesim alone (upstream ceiling), MiB/s", _fmt(ks["mib_per_s"]), ""))
    kl = result.get("keystrokes")
    if kl:
        met = kl["p99_ms"] <= KEYSTROKE_P99_TARGET_MS
        out.append(
            (
                f"keystroke p50 / p90 / p99 ms ({kl['count']} round trips x {len(kl['runs'])})",
                f"{kl['p50_ms']:.2f} / {kl['p90_ms']:.2f} / {kl['p99_ms']:.2f}",
                f"p99 <= {KEYSTROKE_P99_TARGET_MS:g} {_verdict(met)}",
            )
        )
    for conc in result.get("concurrency", []):
        each = _fmt(conc["per_session_mib_per_s_median"], 2)
        out.append(
            (
                f"{conc['sessions']} sessions x {conc['mib_each']} MiB: aggregate MiB/s",
                f"{_fmt(conc['aggregate_mib_per_s'])}; completed {conc['completed']}/"
                f"{conc['sessions']}, per session median {each}",
                _verdict(conc["completed"] == conc["sessions"]),
            )
        )
        cpu = ", ".join(f"{k} {v:g}%" for k, v in conc["cpu_percent"].items())
        out.append(("  CPU (% of one core)", cpu, ""))
    mem = result.get("memory")
    if mem:
        out.append(
            (
                f"Daphne RSS per idle session, KiB ({mem['opened']} sessions)",
                f"{_fmt(mem['kib_per_session'])} ({mem['daphne_rss_before_kib']} -> "
                f"{mem['daphne_rss_after_kib']} KiB)",
                f"<= {IDLE_KIB_TARGET:g} {_verdict(mem['kib_per_session'] <= IDLE_KIB_TARGET)}",
            )
        )
        out.append(("  kubesim RSS per session, KiB", _fmt(mem["kubesim_kib_per_session"]), ""))
        out.append(
            (
                "  time to open them all, s; ready p50 ms",
                f"{_fmt(mem['open_all_seconds'], 2)}; {_fmt(mem['ready_ms_p50'])}",
                "",
            )
        )
    trouble = result.get("daphne_log", {}).get("trouble_lines", 0)
    out.append(("Daphne log: warning/error lines", str(trouble), ""))
    return out


def render(result: dict[str, Any]) -> str:
    """A plain-text table for one database."""
    table = rows(result)
    width = [max(len(r[i]) for r in table) for i in range(3)]
    title = f"{result['db']} ({result['database'].get('version', '?')})"
    if result.get("quick"):
        title += ", --quick"
    # Other work on the machine shows in the figures: say how busy it was.
    before, after = result.get("load_average_before"), result.get("load_average_after")
    if before and after:
        title += f", load average {before[0]:.1f} before, {after[0]:.1f} after"
    lines = [title, "-" * len(title)]
    for name, figure, target in table:
        lines.append(f"{name:<{width[0]}}  {figure:<{width[1]}}  {target}".rstrip())
    return "\n".join(lines)
