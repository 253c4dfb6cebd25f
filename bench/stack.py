"""The servers under test (kubesim and a real Daphne) and what /proc says about processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.daphne import Daphne, run_daphne
from tests.fixtures.kubesim import KUBESIM_CONFIG, Kubesim, run_kubesim

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Log lines from Daphne that the team should hear about.
TROUBLE = re.compile(r"Traceback|ERROR|CRITICAL|WARNING|Exception|Error:", re.IGNORECASE)


@dataclass
class Stack:
    """A running kubesim and Daphne, and the session cookie of the benchmark's user."""

    kubesim: Kubesim
    daphne: Daphne
    cookie: str

    def trouble(self) -> list[str]:
        """Daphne's log lines that look like errors or warnings, so far."""
        return [line.rstrip() for line in self.daphne.log if TROUBLE.search(line)]


@contextlib.contextmanager
def run_stack(env: dict[str, str], workdir: Path, cookie: str) -> Iterator[Stack]:
    """Start kubesim (tests/kubesim.yaml, no transcript) and Daphne on the prepared database."""
    # No transcript: kubesim would write a JSON line for every keystroke.
    with run_kubesim(KUBESIM_CONFIG, workdir / "kubesim", transcript=False) as kubesim:
        daphne_env = {
            **env,
            "WEBSHELL_TEST_KUBECONFIG": str(kubesim.kubeconfig),
            # The concurrency and memory runs open many sessions for one user; BENCH_TERMINALS
            # (JSON) adds settings to try, e.g. {"AUDIT_COMMITS_IN_FLIGHT": 4}.
            "WEBSHELL_TEST_TERMINALS": json.dumps(
                {"MAX_SESSIONS_PER_USER": 0, **json.loads(os.environ.get("BENCH_TERMINALS", "{}"))}
            ),
        }
        with run_daphne(daphne_env) as daphne:
            yield Stack(kubesim, daphne, cookie)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def open_files(pid: int) -> int:
    """File descriptors a process holds (against ``ulimit -n``)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces: the fields after it start past the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_backends_cpu(dbname: str) -> dict[int, float]:
    """CPU time used so far by each PostgreSQL backend connected to ``dbname``, by pid.

    Only those: the test suite may be running on the same server at the same time. The WAL
    writer and checkpointer are shared, so they are left out (they are small next to them).
    """
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            # A backend's title: "postgres: 15/main: USER DBNAME HOST(PORT) STATE".
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if f" {dbname} " in title:
                found[int(entry.name)] = cpu_seconds(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # a backend that ended meanwhile
    return found


class CpuMeter:
    """CPU used by Daphne, kubesim (and PostgreSQL) between start() and stop(), % of one core.

    PostgreSQL is counted per backend: one that ended within the interval is missed (its
    time is gone from /proc), one that started within it counts from its start.
    """

    def __init__(self, stack: Stack, postgres_db: str | None) -> None:
        self.pids = {"daphne": stack.daphne.process.pid, "kubesim": stack.kubesim.process.pid}
        self.postgres_db = postgres_db
        self.start_values: dict[str, float] = {}
        self.start_backends: dict[int, float] = {}
        self.last_used: dict[str, float] = {}  # CPU seconds per process at the last stop()

    def start(self) -> None:
        self.start_values = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        if self.postgres_db:
            self.start_backends = postgres_backends_cpu(self.postgres_db)

    def used(self) -> dict[str, float]:
        """CPU seconds per process since :meth:`start`."""
        used = {name: cpu_seconds(pid) - self.start_values[name] for name, pid in self.pids.items()}
        if self.postgres_db:
            backends = postgres_backends_cpu(self.postgres_db)
            used["postgres"] = sum(
                seconds - self.start_backends.get(pid, 0.0) for pid, seconds in backends.items()
            )
        return used

    def stop(self, wall: float) -> dict[str, float]:
        """Percent of one core per process over ``wall`` seconds."""
        self.last_used = self.used()
        return {
            name: round(100 * seconds / wall, 1)
            for name, seconds in self.last_used.items()
            if wall > 0
        }


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (kubesim's pod processes: a shell per session, and theirs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def pss_kib(pids: list[int]) -> int:
    """Proportional set size of these processes together, KiB: shared pages counted once."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # ended meanwhile
    return total


def listen_overflows() -> int:
    """The kernel's count of connections a full listen backlog dropped (TcpExt), machine-wide."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def load_1min() -> float:
    """The 1-minute load average now."""
    return round(os.getloadavg()[0], 2)


def cpu_ticks() -> tuple[int, int]:
    """The machine's CPU time so far, in clock ticks over every core: (stolen, all).

    Stolen time is the hypervisor's, given to other guests while this VM wanted to run
    (``/proc/stat``'s eighth figure): it tells a slower VM from slower code.
    """
    figures = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: within user and nice]
    return figures[7], sum(figures[:8])


def stolen_percent(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Stolen time between two :func:`cpu_ticks`, in % of all the CPU time between them."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 2) if total > 0 else None
