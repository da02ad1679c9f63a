"""How many of this process's CPU cores other processes keep busy, so that a run whose
torch threads exceed the cores left free can say so (``spikeacc train`` warns once).

Why it matters: on an idle 2-core machine two torch threads (torch's default there) train
``spikeacc train --method saf-f --dataset digits`` faster than one (a median 1.85 vs 2.48 ms
per step), but with another process busy on one core the two threads wait for each other:
a median 13.8 ms per step (5 to 30), against 2.7 ms with one thread.

Measured from /proc/stat (Linux): the busy time of this process's cores between
``LoadMeter()`` and ``busy_cores()``, less this process's own CPU time; elsewhere the
1-minute load average.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

PROC_STAT = Path("/proc/stat")
MIN_SECONDS = 0.2  # the shortest time busy_cores measures over


def own_cpus() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return os.sched_getaffinity(0)
    return set(range(os.cpu_count() or 1))


def cpu_jiffies(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) clock ticks of ``cpus`` since boot, from /proc/stat (None without it).
    Busy is everything but idle and I/O wait: user, nice, system, interrupts, steal."""
    try:
        lines = PROC_STAT.read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(field) for field in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(ticks)
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, total


class LoadMeter:
    """Started now; ``busy_cores()`` is the number of this process's cores that other
    processes kept busy since."""

    def __init__(self) -> None:
        self.cpus = own_cpus()
        self.started = time.monotonic()
        self.own_cpu_s = time.process_time()
        self.jiffies = cpu_jiffies(self.cpus)

    def busy_cores(self) -> float:
        """Cores kept busy by other processes since the start (after sleeping until
        MIN_SECONDS have passed); the 1-minute load average without /proc/stat."""
        if self.jiffies is None:
            return os.getloadavg()[0]
        time.sleep(max(0.0, self.started + MIN_SECONDS - time.monotonic()))
        seconds = time.monotonic() - self.started
        own_cores = (time.process_time() - self.own_cpu_s) / seconds
        busy, total = (now - then for now, then in zip(cpu_jiffies(self.cpus), self.jiffies))
        return max(0.0, busy / max(total, 1) * len(self.cpus) - own_cores)

    def oversubscribed(self, threads: int) -> str | None:
        """A warning if ``threads`` exceed the cores other processes leave free; None if
        they do not (and for one thread, which nothing can beat)."""
        if threads <= 1:
            return None
        busy = round(self.busy_cores())
        free = max(len(self.cpus) - busy, 1)
        if threads <= free:
            return None
        return (f"torch runs {threads} threads, but other processes keep {busy} of this process's "
                f"{len(self.cpus)} cores busy; --threads {free} is likely faster while they run")
