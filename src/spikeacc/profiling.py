"""Cost measurements of a training method: forward multiply-accumulates and peak memory.

Both take a callable ``fn`` (e.g. one ``method.step``) and observe what it really does,
so they reflect each method's own computation rather than an analytic formula.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections import defaultdict
from typing import Callable, Iterator

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from .graph import observe


def count_macs(fn: Callable[[], object]) -> dict[str, int]:
    """Forward multiply-accumulates of every weighted op (Linear, conv, F.linear,
    F.conv) a method evaluates while ``fn()`` runs.

    Each evaluation adds ``output.numel() * fan_in`` (fan_in = in_features, or
    in_channels/groups * kh * kw). Calls are counted, not derived, so a method that
    applies an op twice per step (OTTT: value and trace paths) is charged twice, and a
    call on S steps merged into the batch ([S*B, ...]) S times the per-step cost. Only
    forward calls are seen: backward passes and ops without weights (pooling, flatten,
    additions, neuron updates) are not counted.

    Returns {the op's module name in the network (e.g. "1", "layer1.conv1"): MACs}.
    """
    macs: dict[str, int] = defaultdict(int)

    def count(name: str, output: torch.Tensor, fan_in: int) -> None:
        macs[name] += output.numel() * fan_in

    with observe(count):
        fn()
    return dict(macs)


def peak_memory(fn: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Peak extra memory in bytes allocated by torch while ``fn()`` runs.

    "Extra" means above what was allocated when ``fn`` started (memory freed during
    ``fn`` counts against it). On CUDA this is ``max_memory_allocated`` after
    ``reset_peak_memory_stats`` minus the allocation at the start. On the CPU, torch
    keeps no peak statistics, so the torch profiler records every allocation and free
    (``profile_memory=True``); the answer is the maximum of their running sum in time
    order. This reads the profiler's raw event list (``prof.profiler.kineto_results``),
    because the public ``prof.events()`` attributes allocations to the op that made
    them and keeps only the unattributed ones as "[memory]" events.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return max(torch.cuda.max_memory_allocated(device) - start, 0)
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _native_stderr_silenced():  # kineto prints two lines per profile to fd 2
        prof.start()
    try:
        fn()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    events = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == DeviceType.CPU
    )
    return _peak_of_running_sum(nbytes for _, nbytes in events)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 points to /dev/null inside the block (native code's prints)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _peak_of_running_sum(deltas) -> int:
    """max(0, max over prefixes of sum(deltas)): the peak of allocations minus frees."""
    total = peak = 0
    for delta in deltas:
        total += delta
        peak = max(peak, total)
    return peak
