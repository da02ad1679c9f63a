"""spikeacc.cores: the cores other processes keep busy, and the warning when a run's torch
threads exceed the cores they leave free."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from spikeacc import cores


def write_stat(path, busy: int, idle: int) -> None:
    """A /proc/stat with two CPUs, each with ``busy`` user and ``idle`` idle ticks."""
    lines = [f"cpu  {2 * busy} 0 0 {2 * idle} 0 0 0 0 0 0"]
    lines += [f"cpu{n} {busy} 0 0 {idle} 0 0 0 0 0 0" for n in (0, 1)]
    path.write_text("\n".join(lines + ["intr 1 2 3", "ctxt 5"]) + "\n")


@pytest.fixture
def stat(tmp_path, monkeypatch):
    path = tmp_path / "stat"
    write_stat(path, busy=1000, idle=1000)
    monkeypatch.setattr(cores, "PROC_STAT", path)
    monkeypatch.setattr(cores, "own_cpus", lambda: {0, 1})
    return path


def test_another_process_on_one_of_two_cores_makes_two_threads_a_warning(stat):
    meter = cores.LoadMeter()
    write_stat(stat, busy=1010, idle=1010)  # half of both cores' ticks busy: one core, and not ours (we sleep)
    assert meter.busy_cores() == pytest.approx(1.0, abs=0.1)
    assert meter.oversubscribed(2) == ("torch runs 2 threads, but other processes keep 1 of this process's 2 "
                                       "cores busy; --threads 1 is likely faster while they run")
    assert meter.oversubscribed(1) is None


class Clock:
    """Wall and CPU time of this process, set by the test (so a loaded machine cannot skew them)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def monotonic(self) -> float:
        return self.wall

    def process_time(self) -> float:
        return self.cpu

    def sleep(self, seconds: float) -> None:
        self.wall += max(0.0, seconds)


def test_our_own_busy_time_is_not_counted(stat, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(cores, "time", clock)
    meter = cores.LoadMeter()
    clock.wall = clock.cpu = 1.0  # this process kept one core busy all along
    write_stat(stat, busy=1010, idle=1010)  # and the ticks show one of the two cores busy: ours
    assert meter.busy_cores() == pytest.approx(0.0, abs=1e-9)
    assert meter.oversubscribed(2) is None


@pytest.mark.skipif(not cores.PROC_STAT.is_file(), reason="needs Linux's /proc/stat")
def test_a_real_busy_process_is_seen():
    spinning = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.1)
        assert cores.LoadMeter().busy_cores() > 0.6
    finally:
        spinning.kill()
        spinning.wait()
