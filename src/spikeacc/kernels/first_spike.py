"""The single-spike neuron's first crossing (``spikeacc.neurons.single_spike``,
``_FirstSpike``) in two Triton kernels, all T steps of a block of neurons per program.

Forward: S[t] = 1 at the first t with V[t] >= threshold, else 0, which is
1[z[t] == 1] for z = cumsum(cumsum(H(V - threshold))) over t: a loop with a "fired" flag.

Backward (straight-through z -> S, then the double cumsum's adjoint, then the fast
sigmoid), for g[t] = dL/dS[t]:

    dL/dV[k] = sigma'(V[k] - threshold) y[k],   y[k] = sum_{t>=k} (t - k + 1) g[t]

and y is two running sums in reverse time: c[k] = c[k+1] + g[k], y[k] = y[k+1] + c[k]
(c[k] = sum_{t>=k} g[t], so y[k] - y[k+1] = c[k]), with c[T] = y[T] = 0.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .surrogate import surrogate_derivative

BLOCK = 1024  # neurons per program (not tuned: no GPU measurement yet)


@triton.jit
def _first_spike_forward(v_mem_ptr, spike_ptr, n_neurons, steps, threshold, BLOCK: tl.constexpr):
    """v_mem, spike: [T, n_neurons]."""
    neuron = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = neuron < n_neurons
    row_at = neuron.to(tl.int64)  # offsets of step t, in 64 bits
    fired = tl.zeros([BLOCK], dtype=tl.int1)
    for _ in range(steps):
        v_mem = tl.load(v_mem_ptr + row_at, mask=mask, other=0.0).to(tl.float32)
        crossed = v_mem >= threshold
        spike = (crossed & (~fired)).to(tl.float32)  # via float32: the interpreter cannot cast int1 to bfloat16
        tl.store(spike_ptr + row_at, spike.to(spike_ptr.dtype.element_ty), mask=mask)
        fired = fired | crossed
        row_at += n_neurons


@triton.jit
def _first_spike_backward(grad_spike_ptr, v_mem_ptr, grad_v_mem_ptr, n_neurons, steps, threshold, scale,
                          BLOCK: tl.constexpr):
    """Pointers to the rows of the last step T-1 of grad_spike, v_mem and grad_v_mem,
    each [T, n_neurons]; the loop walks back one row per step."""
    neuron = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = neuron < n_neurons
    row_at = neuron.to(tl.int64)  # offsets from the last step's row: 0, -n_neurons, ...
    grad_count = tl.zeros([BLOCK], dtype=tl.float32)  # c[k]
    grad_faulty = tl.zeros([BLOCK], dtype=tl.float32)  # y[k]
    for _ in range(steps):
        grad_spike = tl.load(grad_spike_ptr + row_at, mask=mask, other=0.0).to(tl.float32)
        v_mem = tl.load(v_mem_ptr + row_at, mask=mask, other=0.0).to(tl.float32)
        grad_count = (grad_count + grad_spike).to(tl.float32)
        grad_faulty = (grad_faulty + grad_count).to(tl.float32)
        grad_v_mem = grad_faulty * surrogate_derivative(v_mem - threshold, scale, "fast_sigmoid")
        tl.store(grad_v_mem_ptr + row_at, grad_v_mem.to(grad_v_mem_ptr.dtype.element_ty), mask=mask)
        row_at -= n_neurons


class _FusedFirstSpike(torch.autograd.Function):
    """``_FirstSpike`` of ``spikeacc.neurons.single_spike`` by the two kernels above."""

    @staticmethod
    def forward(ctx, v_mem: torch.Tensor, threshold: float, scale: float) -> torch.Tensor:  # type: ignore[override]
        v_mem = v_mem.contiguous()  # [T, B, ...]
        steps, n_neurons = v_mem.shape[0], v_mem[0].numel()
        spike = torch.empty_like(v_mem)
        _first_spike_forward[(triton.cdiv(n_neurons, BLOCK),)](
            v_mem, spike, n_neurons, steps, threshold, BLOCK=BLOCK)
        ctx.save_for_backward(v_mem)
        ctx.threshold, ctx.scale = threshold, scale
        return spike

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spike: torch.Tensor):  # type: ignore[override]
        (v_mem,) = ctx.saved_tensors  # [T, B, ...]
        steps, n_neurons = v_mem.shape[0], v_mem[0].numel()
        grad_spike = grad_spike.contiguous()
        grad_v_mem = torch.empty_like(v_mem)
        _first_spike_backward[(triton.cdiv(n_neurons, BLOCK),)](
            grad_spike[-1], v_mem[-1], grad_v_mem[-1], n_neurons, steps, ctx.threshold, ctx.scale, BLOCK=BLOCK)
        return grad_v_mem, None, None


def fused_first_spike(v_mem: torch.Tensor, threshold: float, scale: float) -> torch.Tensor:
    """``first_spike`` in two kernels: v_mem [T, B, ...] -> spikes [T, B, ...] (at most one
    1 per neuron over t). float32, float16 or bfloat16; arithmetic in float32."""
    return _FusedFirstSpike.apply(v_mem, float(threshold), float(scale))
