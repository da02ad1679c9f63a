"""Multi-step LIF in two Triton kernels: all T steps of a block of neurons per program.

Forward (``spikeacc.neurons.lif``; methods.md "LIF"), t = 0..T-1, u[-1] = s[-1] = 0:

    u[t] = lam (u[t-1] - V_th s[t-1]) + I[t],    s[t] = H(u[t] - V_th)   (H(0) = 1)

Each program keeps u and s of BLOCK neurons in float32 registers, loops over t and
writes s[t] and, when a gradient is wanted, the pre-spike membrane u[t] (float32).

Backward. Let g_s[t] = dL/ds[t] (from the layers above) and g[t] = dL/du[t], the total
gradient of u[t]. u[t] reaches L through s[t] and through u[t+1] (du[t+1]/du[t] = lam);
s[t] reaches L directly and, unless the reset is detached, through the reset term of
u[t+1] (du[t+1]/ds[t] = -lam V_th). With sigma' the surrogate derivative of H:

    dL/ds[t] = g_s[t] - lam V_th g[t+1]      (reset not detached)
    dL/ds[t] = g_s[t]                        (detach_reset)
    g[t]     = dL/ds[t] sigma'(u[t] - V_th) + lam g[t+1],     g[T] = 0
    dL/dI[t] = g[t]                          (du[t]/dI[t] = 1)

so one reverse-time loop carrying g[t+1] in registers needs only u[t] and g_s[t].
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from .surrogate import surrogate_derivative

BLOCK = 1024  # neurons per program (not tuned: no GPU measurement yet)


@triton.jit
def _lif_forward(current_ptr, current_step, spike_ptr, v_mem_ptr, n_neurons, steps, lam, v_th,
                 SAVE_MEMBRANE: tl.constexpr, BLOCK: tl.constexpr):
    """current: row of step 0, the next step ``current_step`` elements on (n_neurons, or
    0 for one step shared by all T); spike [T, n_neurons]; v_mem [T, n_neurons] float32
    (None when SAVE_MEMBRANE is off)."""
    neuron = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = neuron < n_neurons
    current_at = neuron.to(tl.int64)  # offsets of step t, in 64 bits: T * n_neurons may pass 2^31
    row_at = neuron.to(tl.int64)
    v_mem = tl.zeros([BLOCK], dtype=tl.float32)
    spike = tl.zeros([BLOCK], dtype=tl.float32)
    for _ in range(steps):
        current = tl.load(current_ptr + current_at, mask=mask, other=0.0).to(tl.float32)
        v_mem = (lam * (v_mem - v_th * spike) + current).to(tl.float32)
        spike = (v_mem >= v_th).to(tl.float32)
        tl.store(spike_ptr + row_at, spike.to(spike_ptr.dtype.element_ty), mask=mask)
        if SAVE_MEMBRANE:
            tl.store(v_mem_ptr + row_at, v_mem, mask=mask)
        current_at += current_step
        row_at += n_neurons


@triton.jit
def _lif_backward(grad_spike_ptr, v_mem_ptr, grad_current_ptr, n_neurons, steps, lam, v_th, alpha,
                  SURROGATE: tl.constexpr, DETACH_RESET: tl.constexpr, BLOCK: tl.constexpr):
    """Pointers to the rows of the last step T-1 of grad_spike, v_mem (float32) and
    grad_current, each [T, n_neurons]; the loop walks back one row per step."""
    neuron = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = neuron < n_neurons
    row_at = neuron.to(tl.int64)  # offsets from the last step's row: 0, -n_neurons, ...
    grad_v_next = tl.zeros([BLOCK], dtype=tl.float32)  # g[t+1]
    for _ in range(steps):
        grad_spike = tl.load(grad_spike_ptr + row_at, mask=mask, other=0.0).to(tl.float32)  # g_s[t]
        v_mem = tl.load(v_mem_ptr + row_at, mask=mask, other=0.0)
        if not DETACH_RESET:  # dL/ds[t] gains the reset path into u[t+1]
            grad_spike = grad_spike - lam * v_th * grad_v_next
        sg = surrogate_derivative(v_mem - v_th, alpha, SURROGATE)
        grad_v = (grad_spike * sg + lam * grad_v_next).to(tl.float32)  # g[t]
        tl.store(grad_current_ptr + row_at, grad_v.to(grad_current_ptr.dtype.element_ty), mask=mask)
        grad_v_next = grad_v
        row_at -= n_neurons


class _FusedLIF(torch.autograd.Function):
    """spikes = LIF over all T steps of current [T, B, ...]; backward by ``_lif_backward``."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, lam: float, v_th: float, surrogate: str, alpha: float,  # type: ignore[override]
                detach_reset: bool, save: bool) -> torch.Tensor:
        steps, n_neurons = current.shape[0], current[0].numel()
        shared = steps > 1 and current.stride(0) == 0  # one step expanded over T
        rows = (current[0] if shared else current).contiguous()  # [B, ...] or [T, B, ...]
        spike = torch.empty(current.shape, dtype=current.dtype, device=current.device)
        v_mem = torch.empty(current.shape, dtype=torch.float32, device=current.device) if save else None
        _lif_forward[(triton.cdiv(n_neurons, BLOCK),)](
            rows, 0 if shared else n_neurons, spike, v_mem, n_neurons, steps, lam, v_th,
            SAVE_MEMBRANE=save, BLOCK=BLOCK)
        if save:
            ctx.save_for_backward(v_mem)
        ctx.settings = (lam, v_th, alpha, surrogate, detach_reset)
        return spike

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spike: torch.Tensor):  # type: ignore[override]
        (v_mem,) = ctx.saved_tensors  # [T, B, ...] float32
        lam, v_th, alpha, surrogate, detach_reset = ctx.settings
        steps, n_neurons = v_mem.shape[0], v_mem[0].numel()
        grad_spike = grad_spike.contiguous()
        grad_current = torch.empty(v_mem.shape, dtype=grad_spike.dtype, device=v_mem.device)
        _lif_backward[(triton.cdiv(n_neurons, BLOCK),)](
            grad_spike[-1], v_mem[-1], grad_current[-1], n_neurons, steps, lam, v_th, alpha,
            SURROGATE=surrogate, DETACH_RESET=detach_reset, BLOCK=BLOCK)
        return grad_current, None, None, None, None, None, None


def fused_lif(current: torch.Tensor, lam: float, v_th: float, surrogate: str, alpha: float,
              detach_reset: bool) -> torch.Tensor:
    """``LIF.run`` in two kernels: current [T, B, ...] (any layout; one step expanded over
    T, stride 0 in dim 0, is read without copying it T times) -> spikes [T, B, ...] in
    the current's dtype. float32, float16 or bfloat16; arithmetic in float32."""
    save = torch.is_grad_enabled() and current.requires_grad  # the membrane only for a backward
    return _FusedLIF.apply(current, float(lam), float(v_th), surrogate, float(alpha), bool(detach_reset), save)
