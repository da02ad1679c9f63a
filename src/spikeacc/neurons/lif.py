"""Leaky integrate-and-fire neuron, the OTTT/SAF convention (methods.md, "LIF").

    u[t] = lam * (u[t-1] - V_th * s[t-1]) + I[t],   s[t] = H(u[t] - V_th),   lam = 1 - 1/tau

Soft reset (subtract V_th), no input decay; equals SpikingJelly's
``LIFNode(tau, decay_input=False, v_reset=None)``.

``LIF`` is an ``nn.Module`` that marks where neurons fire in a user's network and holds
that population's hyperparameters; it has no time state. How time is simulated is the
training method's business (``spikeacc.methods``), which reads the network's graph and
runs each LIF node with these dynamics.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import compiling, kernels
from .surrogate import check_surrogate, derivative, fire, state_precision


class LIF(nn.Module):
    """A population of LIF neurons: hyperparameters and one-step dynamics.

    Args:
        tau: membrane time constant (> 1); the leak is ``lam = 1 - 1/tau``.
        v_th: firing threshold (> 0).
        surrogate: backward of H: "sigmoid", "atan", "fast_sigmoid" or "rect".
        alpha: surrogate sharpness.
        detach_reset: cut the gradient through the reset term (BPTT only; the online
            methods drop all temporal gradients anyway).
    """

    def __init__(self, tau: float = 2.0, v_th: float = 1.0, surrogate: str = "sigmoid",
                 alpha: float = 4.0, detach_reset: bool = False) -> None:
        super().__init__()
        if not tau > 1.0:
            raise ValueError(f"LIF tau must be > 1 (leak 1 - 1/tau in (0, 1)), got {tau}")
        if not v_th > 0.0:
            raise ValueError(f"LIF v_th must be > 0, got {v_th}")
        check_surrogate(surrogate, alpha)
        self.tau, self.v_th, self.alpha = float(tau), float(v_th), float(alpha)
        self.surrogate, self.detach_reset = surrogate, bool(detach_reset)

    def settings(self) -> dict:
        """The constructor's arguments: ``LIF(**lif.settings())`` is an equal neuron."""
        return {"tau": self.tau, "v_th": self.v_th, "surrogate": self.surrogate,
                "alpha": self.alpha, "detach_reset": self.detach_reset}

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self.settings().items())

    @property
    def lam(self) -> float:
        """Leak factor lambda = 1 - 1/tau."""
        return 1.0 - 1.0 / self.tau

    def fire(self, v_mem: torch.Tensor) -> torch.Tensor:
        """s = H(u - V_th) with the surrogate derivative in backward."""
        return fire(v_mem, self.v_th, self.surrogate, self.alpha)

    def step(self, v_mem: torch.Tensor, spike_prev: torch.Tensor, current: torch.Tensor,
             compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: returns (v_mem[t], spike[t]) from v_mem[t-1], spike[t-1], I[t]
        (``compiled``: under torch.compile, ``spikeacc.compiling``)."""
        return compiling.maybe(lif_step, compiled)(v_mem, spike_prev, state_precision(current), *self._dynamics())

    def run(self, current: torch.Tensor, compiled: bool = False, steps: int | None = None) -> torch.Tensor:
        """All T steps from rest: current [T, B, ...], or [1, B, ...] with ``steps`` = T
        (the same current at every step) -> spikes [T, B, ...].

        A fused Triton kernel (``spikeacc.kernels.lif``) where ``spikeacc.kernels.wanted``
        says so (CUDA float32/float16/bfloat16 tensors when triton imports), else
        ``lif_window``: the loop of ``lif_steps`` (the reference) with a hand-written
        reverse-time backward (``compiled``: both loops under torch.compile)."""
        steps = steps or current.shape[0]
        if current.shape[0] not in (1, steps):
            raise ValueError(f"LIF.run: current has {current.shape[0]} steps, not 1 or {steps}")
        if kernels.wanted(current):
            from ..kernels.lif import fused_lif  # imports triton: only once a kernel runs
            return fused_lif(current.expand(steps, *current.shape[1:]), self.lam, self.v_th, self.surrogate,
                             self.alpha, self.detach_reset)
        return lif_window(state_precision(current), steps, *self._dynamics(), compiled=compiled)

    def _dynamics(self) -> tuple[float, float, str, float, bool]:
        return self.lam, self.v_th, self.surrogate, self.alpha, self.detach_reset

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "spikeacc.LIF marks where neurons fire and has no time state; run the network "
            "through a method (spikeacc.methods.get(name, T).predict(net, x)) or "
            "spikeacc.methods.spiking_inference(net, x, T)")


def lif_step(v_mem: torch.Tensor, spike_prev: torch.Tensor, current: torch.Tensor, lam: float, v_th: float,
             surrogate: str, alpha: float, detach_reset: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """u[t] = lam (u[t-1] - V_th s[t-1]) + I[t], s[t] = H(u[t] - V_th): (u[t], s[t])."""
    reset = spike_prev.detach() if detach_reset else spike_prev
    v_mem = lam * (v_mem - v_th * reset) + current
    return v_mem, fire(v_mem, v_th, surrogate, alpha)


def lif_steps(current: torch.Tensor, lam: float, v_th: float, surrogate: str, alpha: float,
              detach_reset: bool) -> torch.Tensor:
    """All T steps from rest: current [T, B, ...] -> spikes [T, B, ...] (``lif_step`` in a loop)."""
    v_mem = torch.zeros_like(current[0])
    spike_t = torch.zeros_like(current[0])
    spikes = []
    for current_t in current:
        v_mem, spike_t = lif_step(v_mem, spike_t, current_t, lam, v_th, surrogate, alpha, detach_reset)
        spikes.append(spike_t)
    return torch.stack(spikes)


class _LIFWindow(torch.autograd.Function):
    """``lif_steps`` without a graph per step: the forward loop runs in place and the
    backward is one reverse-time loop (the equations of ``spikeacc.kernels.lif``): with
    g[t] = dL/du[t], g[T] = 0,

        dL/ds[t] = g_s[t] - lam V_th g[t+1]   (g_s[t] alone with detach_reset)
        g[t]     = dL/ds[t] sigma'(u[t] - V_th) + lam g[t+1],   dL/dI[t] = g[t].

    A current [T, B, ...] saves every membrane u[t]. A one-step current [1, B, ...] (a
    static input's products, the same at every step) gets sum_t g[t], and from T = 8 on
    (where it saves memory) it saves u only at the end of every segment of ~sqrt(T)
    steps and recomputes a segment's u (and spikes, s = H(u - V_th)) from there, bit for
    bit, when the backward reaches it. Nothing [T, B, ...] is saved then: the spikes are
    freed once the next layer's backward has read them.

    ``compiled``: the whole forward (``window_forward``, every u saved) and the whole
    backward (``window_backward``) each run as one torch.compile'd function, which fuses
    all T steps' element-wise work."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, steps: int, lam: float, v_th: float,  # type: ignore[override]
                surrogate: str, alpha: float, detach_reset: bool, save: bool, compiled: bool) -> torch.Tensor:
        ctx.settings = (lam, v_th, surrogate, alpha, detach_reset, steps)
        ctx.shared, ctx.compiled = current.shape[0] == 1, compiled
        if compiled:
            spikes, v_mems = compiling.compiled(window_forward)(current, steps, lam, v_th)
            ctx.every = 1
            if save:
                ctx.save_for_backward(v_mems, None)
            return spikes
        every = math.isqrt(steps - 1) + 1 if ctx.shared and steps >= 8 else 1  # steps per saved u
        shape = (steps, *current.shape[1:])
        spikes = current.new_empty(shape)  # [T, B, ...]
        v_saved = current.new_empty((steps // every if save else 0, *shape[1:]))  # u[every k - 1]
        v_mem, spike_prev = torch.zeros_like(spikes[0]), torch.zeros_like(spikes[0])
        for t in range(steps):
            _advance(v_mem, spike_prev, _at(current, t), lam, v_th, out=v_mem)
            spike_prev = torch.ge(v_mem, v_th, out=spikes[t])
            if save and (t + 1) % every == 0:
                v_saved[t // every].copy_(v_mem)
        if save:
            ctx.save_for_backward(v_saved, current if every > 1 else None)
        ctx.every = every
        return spikes

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        v_saved, current = ctx.saved_tensors
        lam, v_th, surrogate, alpha, detach_reset, steps = ctx.settings
        every = ctx.every
        if ctx.compiled:
            grad_current = compiling.compiled(window_backward)(grad_spikes, v_saved, lam, v_th, surrogate, alpha,
                                                               detach_reset, ctx.shared)
            return grad_current, None, None, None, None, None, None, None, None
        grad_current = torch.zeros_like(grad_spikes[:1] if ctx.shared else grad_spikes)  # [1 or T, B, ...]
        grad_next = None  # g[t+1]
        for start in reversed(range(0, steps, every)):
            stop = min(start + every, steps)
            if every == 1:
                v_minus_th = v_saved[start:stop] - v_th  # u[t] - V_th, [1, B, ...]
            else:
                v_minus_th = _recompute(v_saved, current, start, stop, lam, v_th, every).sub_(v_th)
            for t in reversed(range(start, stop)):
                grad_next = reverse_step(grad_spikes[t], v_minus_th[t - start], grad_next, lam, v_th, surrogate,
                                         alpha, detach_reset)
                grad_current[0 if ctx.shared else t] += grad_next
        return grad_current, None, None, None, None, None, None, None, None


def reverse_step(grad_spike: torch.Tensor, v_minus_th: torch.Tensor, grad_next: torch.Tensor | None, lam: float,
                 v_th: float, surrogate: str, alpha: float, detach_reset: bool) -> torch.Tensor:
    """g[t] = (g_s[t] - lam V_th g[t+1]) sigma'(u[t] - V_th) + lam g[t+1] (``_LIFWindow``),
    from g_s[t], u[t] - V_th and g[t+1] (None at t = T - 1)."""
    if grad_next is not None and not detach_reset:
        grad_spike = grad_next.mul(-lam * v_th).add_(grad_spike)  # dL/ds[t]
    grad_v = derivative(surrogate, v_minus_th, alpha).mul_(grad_spike)
    return grad_v if grad_next is None else grad_v.add_(grad_next, alpha=lam)


def window_forward(current: torch.Tensor, steps: int, lam: float, v_th: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward loop as pure tensor code for torch.compile: current [T or 1, B, ...]
    -> (spikes, membranes u), each [T, B, ...]."""
    v_mem, spike_t = torch.zeros_like(current[0]), torch.zeros_like(current[0])
    spikes, v_mems = [], []
    for t in range(steps):
        v_mem = lam * (v_mem - v_th * spike_t) + _at(current, t)
        spike_t = (v_mem >= v_th).to(v_mem.dtype)
        spikes.append(spike_t)
        v_mems.append(v_mem)
    return torch.stack(spikes), torch.stack(v_mems)


def window_backward(grad_spikes: torch.Tensor, v_mems: torch.Tensor, lam: float, v_th: float, surrogate: str,
                    alpha: float, detach_reset: bool, shared: bool) -> torch.Tensor:
    """The backward loop as pure tensor code for torch.compile: dL/dI [T, B, ...], or its
    sum over t [1, B, ...] for a ``shared`` current."""
    grads, grad_next = [], None
    for t in reversed(range(v_mems.shape[0])):
        grad_next = reverse_step(grad_spikes[t], v_mems[t] - v_th, grad_next, lam, v_th, surrogate, alpha,
                                 detach_reset)
        grads.append(grad_next if not shared or not grads else grads[-1] + grad_next)  # shared: running sum
    return grads[-1].unsqueeze(0) if shared else torch.stack(grads[::-1])


def _at(current: torch.Tensor, t: int) -> torch.Tensor:
    """I[t] of a current [T, B, ...] or [1, B, ...] (the same at every step)."""
    return current[t if current.shape[0] > 1 else 0]


def _advance(v_prev: torch.Tensor, spike_prev: torch.Tensor, current_t: torch.Tensor, lam: float, v_th: float,
             out: torch.Tensor) -> torch.Tensor:
    """u[t] = lam (u[t-1] - V_th s[t-1]) + I[t] into ``out`` (may be ``v_prev``): the
    roundings of ``lif_step``, so u and the spikes equal its own bit for bit."""
    return torch.sub(v_prev, spike_prev, alpha=v_th, out=out).mul_(lam).add_(current_t)


def _recompute(v_saved: torch.Tensor, current: torch.Tensor, start: int, stop: int, lam: float, v_th: float,
               every: int) -> torch.Tensor:
    """u[start..stop-1], [stop - start, B, ...], from the saved u[start - 1] (rest at 0)."""
    v_mems = current.new_empty((stop - start, *current.shape[1:]))
    v_prev = v_saved[start // every - 1] if start else torch.zeros_like(v_mems[0])
    for t in range(start, stop):
        spike_prev = torch.ge(v_prev, v_th).to(v_mems.dtype)  # s[t-1], as the forward made it
        v_prev = _advance(v_prev, spike_prev, current[0], lam, v_th, out=v_mems[t - start])
    return v_mems


def lif_window(current: torch.Tensor, steps: int, lam: float, v_th: float, surrogate: str, alpha: float,
               detach_reset: bool, compiled: bool = False) -> torch.Tensor:
    """``lif_steps`` (same spikes, bit for bit; gradients to rounding, tests/test_lif.py)
    at a fraction of its memory: current [T, B, ...] or [1, B, ...] (the same at every one
    of ``steps``) -> spikes [T, B, ...]. ``compiled``: under torch.compile (``_LIFWindow``)."""
    save = torch.is_grad_enabled() and current.requires_grad  # the membranes only for a backward
    return _LIFWindow.apply(current, steps, lam, v_th, surrogate, alpha, detach_reset, save, compiled)


def accumulation_weight(lam: float, t: int) -> float:
    """c[t] = sum_{k<t} lam^k = (1 - lam^t) / (1 - lam), for 1-based step t.

    c[t] is the accumulated weight of a constant input (SAF's bias factor), and c[T]
    normalises the accumulated spike A[T] into the weighted firing rate of Spike
    Representation (A[T] = sum_t lam^(T-t) s[t] has weights summing to c[T]).
    """
    return (1.0 - lam ** t) / (1.0 - lam)
