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
from torch.profiler import ProfilerActivity, profile, record_function

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


def peak_memory(fn: Callable[[], object], device: str | torch.device = "cpu",
                prepare: Callable[[], object] = lambda: None) -> int:
    """Peak extra memory in bytes allocated by torch during one call of ``fn``, after
    ``prepare()`` (not measured; e.g. ``net.zero_grad(set_to_none=True)``).

    "Extra" means above what was allocated when the call started (memory freed during it
    counts against it). On CUDA this is ``max_memory_allocated`` after
    ``reset_peak_memory_stats`` minus the allocation at the start. On the CPU, torch keeps
    no peak statistics, so the torch profiler records every allocation and free
    (``profile_memory=True``) and the answer is the maximum of their running sum in time
    order, read from the raw event list (``prof.profiler.kineto_results``; the public
    ``prof.events()`` keeps only unattributed "[memory]" events). The profiler knows a
    block's size only if it saw the allocation: a free of a block allocated while it was
    off is dropped, or counted with the stale size of an earlier block at that address
    (5.1, 2.7 and 1.9 MiB for the same OTTT step). So on the CPU ``prepare(); fn()`` runs
    twice inside one profile and the second call is measured, from the running sum at its
    start: what it frees, the first call (or itself) allocated, with sizes seen.
    """
    device = torch.device(device)
    if device.type == "cuda":
        prepare()
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
        prepare()
        fn()
        prepare()
        with record_function(_MEASURED):
            fn()
    finally:
        with _native_stderr_silenced():
            prof.stop()
    events = list(prof.profiler.kineto_results.events())
    window = next(e for e in events if e.name() == _MEASURED)
    deltas = sorted(((e.start_ns(), e.nbytes()) for e in events  # stable: events of one time stamp stay
                     if e.name() == "[memory]" and e.device_type() == DeviceType.CPU),  # in recorded order
                    key=lambda delta: delta[0])
    during = (nbytes for at, nbytes in deltas if window.start_ns() <= at <= window.end_ns())
    return _peak_of_running_sum(during)


_MEASURED = "spikeacc.peak_memory: measured call"


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
