"""The benchmark's own rules, in process: timing between markers, matching echoes to keys,
percentiles with lost keys, the knee, the report. (The bench itself runs with ``make bench``.)
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

from bench.client import KEYS, EchoClock, MarkerTimer, SessionFailed, Typist, latency_summary
from bench.crowd import _spread, merge_typing
from bench.load import knee
from bench.measures import seq_workload
from bench.report import render, render_summary
from bench.stack import cpu_ticks, stolen_percent

# Timing output between markers ---------------------------------------------------------------


def test_a_raw_stream_is_timed_from_the_chunk_that_holds_the_first_marker() -> None:
    timer = MarkerTimer()
    assert not timer.feed(b"$ printf ...\r\nBENCH-BEGIN\nabc", 1.0)
    assert not timer.feed(b"defg", 2.0)
    assert timer.feed(b"hiBENCH-END\n$ ", 3.0)
    stream = timer.stream()
    assert stream.total == len(b"abcdefghi")
    assert stream.timed == len(b"defghi")  # the first chunk arrived when the clock started
    assert (stream.started, stream.ended) == (1.0, 3.0)


def test_a_cooked_stream_counts_what_follows_the_line_end() -> None:
    timer = MarkerTimer()
    timer.feed(b"BENCH-BEGIN\r\n1\r\n2\r\n", 1.0)
    timer.feed(b"3\r\nBENCH-END\r\n", 2.0)
    assert timer.stream().total == len(b"1\r\n2\r\n3\r\n")


def test_markers_split_across_chunks_are_found() -> None:
    timer = MarkerTimer()
    for i, chunk in enumerate([b"xxBENCH-BE", b"GIN", b"\n123", b"45BENCH-E", b"ND\n"]):
        timer.feed(chunk, float(i))
    stream = timer.stream()
    assert stream.total == 5
    assert stream.timed == 2  # "123" came with the first marker's line end, when timing began
    assert (stream.started, stream.ended) == (2.0, 4.0)


def test_an_end_marker_spread_over_several_small_chunks_is_found() -> None:
    timer = MarkerTimer()
    for i, chunk in enumerate([b"BENCH-BEGIN\n", b"abBENCH", b"-E", b"ND\n"]):
        timer.feed(chunk, float(i))
    assert (timer.stream().total, timer.stream().ended) == (2, 3.0)


def test_both_markers_in_one_chunk_time_nothing() -> None:
    timer = MarkerTimer()
    assert timer.feed(b"BENCH-BEGIN\nabcBENCH-END\n", 1.0)
    assert (timer.stream().total, timer.stream().timed, timer.stream().mib_per_s) == (3, 0, 0.0)


def test_a_stream_without_its_end_marker_is_a_failure() -> None:
    timer = MarkerTimer()
    timer.feed(b"BENCH-BEGIN\nabc", 1.0)
    with pytest.raises(SessionFailed):
        timer.stream()


def test_the_expected_size_of_seq_output_on_a_cooked_tty() -> None:
    for lines in (1, 9, 10, 99, 100, 12345):
        expected = len("".join(f"{i}\r\n" for i in range(1, lines + 1)))
        assert seq_workload(lines).size == expected


# Matching echoes to keystrokes ---------------------------------------------------------------


def test_each_echoed_byte_answers_the_oldest_key_however_frames_group_them() -> None:
    clock = EchoClock(window_end=10.0)
    for t in (1.0, 2.0, 3.0):
        clock.typed(t, due=t)
    clock.echoed(2, 3.5)  # the first two came back in one frame
    clock.echoed(1, 3.25)
    assert clock.latencies == [2.5, 1.5, 0.25]
    assert clock.outstanding == 0
    assert clock.echoed_in_window == 3


def test_echoes_after_the_window_are_timed_but_not_counted_as_achieved() -> None:
    clock = EchoClock(window_end=2.0)
    clock.typed(1.0)
    clock.typed(1.5)
    clock.echoed(1, 1.9)
    clock.echoed(1, 2.1)
    assert clock.echoed_in_window == 1
    assert len(clock.latencies) == 2


def test_echoes_owed_to_an_earlier_window_are_skipped() -> None:
    clock = EchoClock(stale=2)
    clock.typed(5.0)
    clock.echoed(3, 6.0)  # two late echoes of the last window, then this window's key
    assert clock.latencies == [1.0]
    assert clock.unexpected == 0


def test_bytes_that_answer_no_key_are_counted_apart() -> None:
    clock = EchoClock()
    clock.echoed(2, 1.0)
    assert (clock.unexpected, clock.latencies) == (2, [])


def test_lost_keys_count_as_slower_than_every_key_that_came_back() -> None:
    summary = latency_summary([0.001] * 98, lost=2)
    assert summary["count"] == 100
    assert summary["p50_ms"] == 1.0
    assert summary["p99_ms"] is None  # among the lost ones
    assert latency_summary([0.001] * 99, lost=1)["p99_ms"] == 1.0


class EchoingTypist(Typist):
    """A typist whose 'server' echoes every key at once, in this process."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.keys = b""

    async def send(self, key: bytes) -> None:
        self.keys += key
        self.queue.put_nowait(key)

    async def receive(self) -> bytes:
        return await self.queue.get()

    async def shut(self) -> None:
        pass


async def test_a_typist_types_on_schedule_and_every_echo_is_timed() -> None:
    typist = EchoingTypist()
    typist.start()
    start = time.monotonic()
    await typist.type_for(start, seconds=0.05, interval=0.01, phase=0.005)
    assert await typist.drain(timeout=5)
    await typist.close()
    assert typist.clock.sent == 5  # at 5, 15, 25, 35 and 45 ms
    assert typist.keys == KEYS[:5]
    assert len(typist.clock.latencies) == 5
    assert typist.failure is None


# Crowds, the knee, the report ---------------------------------------------------------------


def test_new_sessions_go_where_there_are_fewest() -> None:
    assert _spread([3, 0, 1], 4) == [0, 3, 1]
    assert _spread([0, 0], 5) == [3, 2]


def worker_reply(web: list[float], direct: list[float], lost: int = 0) -> dict[str, Any]:
    def figures(latencies: list[float], lost: int) -> dict[str, Any]:
        return {
            "typists": 1,
            "failed": 0,
            "latencies": latencies,
            "lost": lost,
            "sent": len(latencies) + lost,
            "echoed_in_window": len(latencies),
            "unexpected": 0,
        }

    return {
        "web": figures(web, lost),
        "direct": figures(direct, 0),
        "lateness": [0.001],
        "cpu_percent": 5.0,
    }


def test_workers_figures_merge_into_one_window() -> None:
    merged = merge_typing(
        [worker_reply([0.002] * 50, [0.001] * 10), worker_reply([0.004] * 50, [0.001] * 10)], 2.0
    )
    assert merged["web"]["count"] == 100
    assert merged["web"]["p50_ms"] == 2.0
    assert merged["web"]["p99_ms"] == 4.0
    assert merged["web"]["sent_per_s"] == 50.0
    assert merged["client"]["cpu_percent_each"] == [5.0, 5.0]


def step(sessions: int, added_p99: float | None, failed: int = 0) -> dict[str, Any]:
    return {"sessions": sessions, "added_p99_ms": added_p99, "web": {"failed": failed}}


def test_the_knee_is_the_largest_n_within_the_limit_with_every_smaller_one() -> None:
    assert knee([step(50, 3.0), step(100, 12.0), step(300, 25.0)]) == 100
    assert knee([step(50, 30.0)]) is None
    assert knee([step(50, 3.0), step(100, None)]) == 50  # keys lost at 100
    assert knee([step(50, 3.0), step(100, 4.0, failed=1)]) == 50  # a session dropped at 100


def spread(value: float) -> dict[str, float]:
    return {"median": value, "min": value * 0.9, "max": value * 1.1}


def window(sessions: int, added_p99: float) -> dict[str, Any]:
    latency = {"p50_ms": 1.0, "p99_ms": added_p99 + 1.0, "lost": 0, "failed": 0}
    return {
        "sessions": sessions,
        "web": {**latency, "typists": sessions, "sent_per_s": 5.0, "echoed_per_s": 5.0},
        "direct": {"p50_ms": 0.2, "p99_ms": 1.0, "lost": 0, "failed": 0, "typists": 10},
        "added_p50_ms": 0.8,
        "added_p99_ms": added_p99,
        "cpu_percent": {"daphne": 50.0, "kubesim": 10.0},
        "daphne_cpu_ms_per_keystroke": 0.4,
        "client": {"workers": 1, "cpu_percent_each": [3.0], "send_lateness_p99_ms": 0.5},
        "load_1min": 0.5,
        "harness_limited": False,
    }


def sample_result(db: str) -> dict[str, Any]:
    """A result with every section, shaped as bench.suite writes it."""
    output_run = {
        "mib_per_s": 40.0,
        "frames_out": 1000,
        "mean_output_frame_bytes": 60000,
        "frames_per_commit": None,
        "store_bytes_per_mib": 1060000,
        "cpu_percent": {"daphne": 80.0, "kubesim": 30.0},
    }
    output = {
        "workload": "cat 64 MiB, raw TTY",
        "rounds": 3,
        "runs": {"web": [output_run] * 3},
        **{f"{k}_mib_per_s": spread(v) for k, v in (("web", 40), ("kubectl", 60), ("bare", 90))},
        "web_over_kubectl": spread(0.67),
        "web_over_bare": spread(0.44),
        "daphne_cpu_ms_per_mib": spread(12.0),
        "load_1min": spread(0.5),
        "all_intact": True,
    }
    return {
        "date": "2026-11-26",
        "db": db,
        "kind": "standard",
        "machine": {
            "nproc": 2,
            "cpu_model": "AMD EPYC",
            "memory_gib": 23.5,
            "debian": "12.11",
            "kernel": "6.18",
            "python": "3.11.7",
            "versions": {"Django": "5.2.19"},
        },
        "database": {"version": "3.40.1"},
        "sizes": {"idle_sessions": [100, 1000]},
        "limits": {"opening_at_once": 32},
        "load_average_before": [0.5, 0.4, 0.3],
        "load_average_after": [1.5, 0.9, 0.5],
        "elapsed_seconds": 240.0,
        "stolen_percent": 3.25,
        "memory": {
            "daphne_rss_before_kib": 110000,
            "steps": [
                {
                    "sessions": n,
                    "opened": n,
                    "failures": [],
                    "kib_per_session": kib,
                    "kubesim_kib_per_session": 310.0,
                    "shells_pss_kib_per_session": 520.0,
                    "open_seconds": 2.0,
                    "ready_ms_p50": 400.0,
                    "listen_overflows": 0,
                    "load_1min": 0.5,
                }
                for n, kib in ((100, 140.0), (1000, 160.0))
            ],
        },
        "keystrokes": {
            "count": 1000,
            "rounds": [{}] * 3,
            **{f"{k}_{p}": spread(1.0) for k in ("web", "direct") for p in ("p50", "p99")},
            "added_p50": spread(0.8),
            "added_p99": spread(4.0),
            "load_1min": spread(0.5),
        },
        "output": [output, {**output, "workload": "seq 1 1,000,000, cooked TTY"}],
        "concurrency": [
            {
                "sessions": 20,
                "mib_each": 4,
                "aggregate_mib_per_s": 50.0,
                "per_session_mib_per_s_median": 2.5,
                "completed": 20,
                "cpu_percent": {"daphne": 90.0, "kubesim": 30.0},
                "load_1min": spread(0.5),
            }
        ],
        "beside_stream": {
            "typists": 20,
            "window_seconds": 8,
            "rounds": [{"alone": window(20, 3.0), "with_stream": window(20, 5.0)}],
            "p99_ratio": spread(1.5),
            "added_p99_ratio": spread(1.7),
            "stream_mib_per_s": spread(40.0),
        },
        "typing": {
            "window_seconds": 8,
            "limit_added_p99_ms": 20.0,
            "steps": [window(50, 3.0), window(100, 12.0), window(300, 25.0)],
            "knee": 100,
            "stopped_past_knee": True,
            "harness_limited": False,
            "without_daphne": {
                "typists": 500,
                "direct": {"p50_ms": 0.9, "p99_ms": 6.4, "typists": 500},
                "cpu_percent": {"daphne": 1.4, "kubesim": 58.2},
                "client": {"workers": 2, "cpu_percent_each": [26.0, 26.5]},
                "load_1min": 0.9,
            },
        },
        "daphne_log": {"trouble_lines": 0},
    }


def test_the_report_gives_every_section_with_its_verdict() -> None:
    text = render(sample_result("sqlite"))
    for heading in (
        "**Output**",
        "**Keystrokes, one session**",
        "**Typing ramp**",
        "**Memory per idle session**",
        "**A streaming session beside 20 typists**",
        "**Sessions streaming at once**",
    ):
        assert heading in text
    assert "(the largest N whose added p99 ≤ 20 ms): **100** (target ≥ 500: **missed**)" in text
    assert "| 40.0 (36.0\N{EN DASH}44.0) |" in text  # the web shell's MiB/s, median (min, max)


def test_the_summary_puts_the_databases_side_by_side_against_the_targets() -> None:
    postgres = copy.deepcopy(sample_result("postgres"))
    postgres["typing"]["knee"] = None
    text = render_summary([sample_result("sqlite"), postgres])
    assert "|  | SQLite | PostgreSQL | target |" in text
    assert "| **100** (500 keys/s) | < 50 | ≥ 500 |" in text
    assert "Daphne RSS per idle session at 100 / 1000 sessions, KiB | 140.0 / 160.0" in text


def test_the_report_says_what_the_machine_takes_at_the_target_without_the_web_shell() -> None:
    result = sample_result("postgres")
    assert (
        "**The machine without the web shell** at N = 500: as many typists straight to "
        "kubesim, nobody through Daphne: p50 / p99 0.90 / 6.40 ms; kubesim 58.2 % and the "
        "bench client 52.5 % of one core"
    ) in render(result)
    assert "(no web shell), % of a core | N = 500: 111 % (their p99 6.4 ms) |" in render_summary(
        [result]
    )
    del result["typing"]["without_daphne"]  # a ramp within the target, or an older run
    assert "The machine without the web shell" not in render(result)


def test_the_report_says_how_much_cpu_time_the_hypervisor_took() -> None:
    result = sample_result("sqlite")
    assert "240.0 s in all; CPU time stolen by the hypervisor: 3.25 %." in render(result)
    assert "| CPU time stolen by the hypervisor over the run, % | 3.25 |" in render_summary(
        [result]
    )
    del result["stolen_percent"]  # an older run
    assert "240.0 s in all." in render(result)


def test_stolen_time_is_a_share_of_all_the_cpu_time_between_two_readings() -> None:
    assert stolen_percent((10, 1000), (30, 3000)) == 1.0
    assert stolen_percent((10, 1000), (10, 1000)) is None
    stolen, total = cpu_ticks()
    assert 0 <= stolen <= total


def test_a_section_the_run_lacks_is_left_out_of_the_summary_row_not_the_table() -> None:
    result = sample_result("sqlite")
    del result["beside_stream"]
    text = render_summary([result])
    assert "keystroke p99 beside a streaming session ÷ alone (added p99 ÷ alone) | n/a |" in text
