"""How busy the CPU cores are with other processes, measured while sdscratch imports (no extra wait).

``import sdscratch`` records a snapshot of the kernel's per-core CPU time counters (``/proc/stat``) and of this
process's own CPU time; ``busy_cores_of_other_processes()`` compares them with the counters now. The heavy
imports (torch, diffusers, transformers: seconds) run in between, so the measurement costs nothing.
"""

from __future__ import annotations

import math
import os
import time
from typing import Optional

MIN_WINDOW_S = 0.1  # /proc/stat counts in 10 ms ticks: shorter windows are too coarse
CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2 CPU quota: "max <period>" or "<quota> <period>" (microseconds)
# set by `accelerate launch` in every process it starts (accelerate/utils/launch.py), never by `Accelerator()` itself
ACCELERATE_LAUNCH_MARKERS = ("ACCELERATE_MIXED_PRECISION", "ACCELERATE_DYNAMO_BACKEND")


def _allowed_cpus() -> Optional[set[int]]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None


def _read_cgroup_cpu_max() -> Optional[str]:
    try:
        with open(CGROUP_CPU_MAX) as f:
            return f.read()
    except OSError:
        return None


def cgroup_cpu_limit() -> Optional[int]:
    """The cores a cgroup v2 CPU quota allows (`ceil(quota / period)` from `/sys/fs/cgroup/cpu.max`, e.g. 2 for
    "150000 100000"); `None` without a quota ("max 100000"), or where the file is missing or unreadable."""
    text = _read_cgroup_cpu_max()
    if text is None:
        return None
    fields = text.split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity where the OS has one (else all cores), capped by the
    cgroup v2 CPU quota where one is set (a container limited to 2 CPUs on a 64-core host can use 2)."""
    cores = len(_allowed_cpus() or ()) or (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return cores if limit is None else min(cores, limit)


def _launcher_process() -> Optional[tuple[dict[str, str], list[str]]]:
    """The environment the parent process was started with and its command line (from `/proc`; where there is
    none, as on macOS and Windows, from psutil, which accelerate installs); `None` where they cannot be read."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/environ", "rb") as f:
            environ_raw = f.read()
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            cmdline_raw = f.read()
    except OSError:
        try:
            import psutil

            process = psutil.Process(parent)
            return dict(process.environ()), list(process.cmdline())
        except Exception:  # psutil missing, access denied, the parent gone
            return None
    items = environ_raw.decode(errors="replace").split("\0")
    environ = dict(item.split("=", 1) for item in items if "=" in item)
    return environ, [arg for arg in cmdline_raw.decode(errors="replace").split("\0") if arg]


def omp_threads_from_accelerate_launch() -> bool:
    """Whether this process's `OMP_NUM_THREADS` is `accelerate launch`'s default rather than the user's choice.

    `accelerate launch` marks every process it starts (`ACCELERATE_MIXED_PRECISION`, `ACCELERATE_DYNAMO_BACKEND`)
    and sets `OMP_NUM_THREADS` to `--num_cpu_threads_per_process`, which defaults to the launcher's own
    `OMP_NUM_THREADS`, else 1. So the value is accelerate's default when the process was started by `accelerate
    launch` and the launcher (the parent process) had no `OMP_NUM_THREADS` in its environment and no
    `--num_cpu_threads_per_process` on its command line. Where the parent cannot be read (no `/proc`), an
    accelerate launch counts as the default. A user's own `OMP_NUM_THREADS=1` (with or without accelerate) is
    never accelerate's.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        return False
    if not any(name in os.environ for name in ACCELERATE_LAUNCH_MARKERS):
        return False  # plain `python script.py`: the user set OMP_NUM_THREADS
    launcher = _launcher_process()
    if launcher is None:
        return True
    environ, cmdline = launcher
    if "OMP_NUM_THREADS" in environ:
        return False
    flag = "--num_cpu_threads_per_process"
    return not any(arg == flag or arg.startswith(flag + "=") for arg in cmdline)


def load_average_text() -> str:
    """The 1-minute load average as the benchmarks print it (e.g. "1.3"); "n/a" on Windows, which has none."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


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
