"""SAF's neuron steps in one Triton kernel, for CUDA tensors (``cpu.py``'s ``saf_steps``
for CPU ones; methods.saf: ``whole_sites`` and ``fused_step``). For each step t of a
block of neurons (methods.saf's equations):

    U = c[t] u,   s = H(g U - rho V_th A_own - V_th),   A_j = lam_j A_j + s  (every leak j)

from the sums given (or none: A_j = 0, where the first step's subtraction and products
are exact no-ops). Compiled without fused multiply-add (``enable_fp_fusion=False``), so
every product and sum rounds as PyTorch's do: the same sums and spikes bit for bit as the
step-by-step reference (float32; the scalars enter as float32, as PyTorch casts Python
numbers for float32 tensors). The sums live in the output rows [L, B, ...], read and
written by the thread that owns each neuron.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 1024  # neurons per program (not tuned: no GPU measurement yet)


@triton.jit
def _saf_steps(unit_ptr, scales_ptr, steps, leaks_ptr, n_leaks, own, previous_ptr, acc_ptr, counts_ptr, last_ptr,
               spikes_ptr, n_neurons, gain, reset, v_th, GAIN: tl.constexpr, STRICT: tl.constexpr,
               PREVIOUS: tl.constexpr, COUNT: tl.constexpr, LAST: tl.constexpr, SPIKES: tl.constexpr,
               BLOCK: tl.constexpr):
    """unit, counts, last, spikes: [n_neurons]; previous (PREVIOUS) and acc: [n_leaks,
    n_neurons]; scales [steps] and leaks [n_leaks] float32."""
    neuron = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = neuron < n_neurons
    at = neuron.to(tl.int64)
    u = tl.load(unit_ptr + at, mask=mask, other=0.0)
    for j in range(n_leaks):  # A_j before the first step
        start = tl.zeros_like(u)
        if PREVIOUS:
            start = tl.load(previous_ptr + j * n_neurons + at, mask=mask, other=0.0)
        tl.store(acc_ptr + j * n_neurons + at, start, mask=mask)
    count, spike = tl.zeros_like(u), tl.zeros_like(u)
    for t in range(steps):
        value = tl.load(scales_ptr + t) * u
        if GAIN:
            value = gain * value
        value = value - reset * tl.load(acc_ptr + own * n_neurons + at, mask=mask, other=0.0)
        if LAST:  # the last step's value stays
            tl.store(last_ptr + at, value, mask=mask)
        spike = (value > v_th if STRICT else value >= v_th).to(tl.float32)
        for j in range(n_leaks):
            row = acc_ptr + j * n_neurons + at
            tl.store(row, tl.load(leaks_ptr + j) * tl.load(row, mask=mask, other=0.0) + spike, mask=mask)
        count += spike
    if COUNT:
        tl.store(counts_ptr + at, tl.load(counts_ptr + at, mask=mask, other=0.0) + count, mask=mask)
    if SPIKES:  # the last step's spikes
        tl.store(spikes_ptr + at, spike, mask=mask)


def saf_steps(unit: torch.Tensor, scales: list[float], leaks: list[float], own: int, gain: float, reset: float,
              v_th: float, strict: bool, previous: list[torch.Tensor] | None = None,
              counts: torch.Tensor | None = None, last: torch.Tensor | None = None,
              spikes: torch.Tensor | None = None) -> list[torch.Tensor]:
    """``kernels.cpu.saf_steps`` on float32 tensors of any device Triton runs: the sums
    after the last step, one per leak, each [B, ...]."""
    unit = unit.contiguous()
    if any(t is not None and not t.is_contiguous() for t in (counts, last, spikes)):
        raise ValueError("saf_steps writes into contiguous tensors")
    acc = unit.new_empty((len(leaks), *unit.shape))  # [L, B, ...]
    stacked = None if previous is None else torch.stack(previous)
    as_floats = lambda values: torch.tensor(values, dtype=torch.float32, device=unit.device)  # noqa: E731
    _saf_steps[(triton.cdiv(unit.numel(), BLOCK),)](
        unit, as_floats(scales), len(scales), as_floats(leaks), len(leaks), own,
        acc if stacked is None else stacked, acc, unit if counts is None else counts, unit if last is None else last,
        unit if spikes is None else spikes, unit.numel(), gain, reset, v_th, GAIN=gain != 1.0, STRICT=bool(strict),
        PREVIOUS=stacked is not None, COUNT=counts is not None, LAST=last is not None, SPIKES=spikes is not None,
        BLOCK=BLOCK, enable_fp_fusion=False)
    return list(acc.unbind(0))
