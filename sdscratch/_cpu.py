"""How busy the CPU cores are with other processes, measured while sdscratch imports (no extra wait).

``import sdscratch`` records a snapshot of the kernel's per-core CPU time counters (``/proc/stat``) and of this
process's own CPU time; ``busy_cores_of_other_processes()`` compares them with the counters now. The heavy
imports (torch, diffusers, transformers: seconds) run in between, so the measurement costs nothing.
"""

from __future__ import annotations

import os
import time
from typing import Optional

MIN_WINDOW_S = 0.1  # /proc/stat counts in 10 ms ticks: shorter windows are too coarse


def _allowed_cpus() -> Optional[set[int]]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, else all)."""
    return len(_allowed_cpus() or ()) or (os.cpu_count() or 1)


def cpu_snapshot() -> Optional[tuple[float, float, int, int]]:
    """`(wall, own CPU seconds, busy ticks, total ticks)` over the cores this process may use; `None` off Linux."""
    allowed = _allowed_cpus()
    busy = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if not name.startswith("cpu") or name == "cpu":
                    continue
                if allowed is not None and int(name[3:]) not in allowed:
                    continue
                ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
                total += sum(ticks)
                busy += sum(ticks) - ticks[3] - ticks[4]
    except (OSError, ValueError, IndexError):
        return None
    if total == 0:
        return None
    return time.perf_counter(), time.process_time(), busy, total


IMPORT_SNAPSHOT = cpu_snapshot()


def busy_cores_of_other_processes(since=IMPORT_SNAPSHOT) -> Optional[float]:
    """Cores kept busy by other processes since `since` (default: since ``import sdscratch``).

    Busy cores over the window, minus this process's own CPU time in it. Waits until the window is at least
    0.1 s long. Returns `None` where ``/proc/stat`` cannot be read (then use the load average).
    """
    if since is None:
        return None
    remaining = MIN_WINDOW_S - (time.perf_counter() - since[0])
    if remaining > 0:
        time.sleep(remaining)
    now = cpu_snapshot()
    if now is None or now[3] <= since[3]:
        return None
    wall = now[0] - since[0]
    busy_cores = usable_cores() * (now[2] - since[2]) / (now[3] - since[3])
    own_cores = (now[1] - since[1]) / wall
    return max(0.0, busy_cores - own_cores)
