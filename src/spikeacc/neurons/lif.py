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

import torch
from torch import nn

from .. import compiling, kernels
from .surrogate import check_surrogate, spike, state_precision


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
        return spike(v_mem - self.v_th, self.surrogate, self.alpha)

    def step(self, v_mem: torch.Tensor, spike_prev: torch.Tensor, current: torch.Tensor,
             compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: returns (v_mem[t], spike[t]) from v_mem[t-1], spike[t-1], I[t]
        (``compiled``: under torch.compile, ``spikeacc.compiling``)."""
        return compiling.maybe(lif_step, compiled)(v_mem, spike_prev, state_precision(current), *self._dynamics())

    def run(self, current: torch.Tensor, compiled: bool = False) -> torch.Tensor:
        """All T steps from rest: current [T, B, ...] -> spikes [T, B, ...].

        A fused Triton kernel (``spikeacc.kernels.lif``) where ``spikeacc.kernels.wanted``
        says so (CUDA float32/float16/bfloat16 tensors when triton imports), else the
        loop ``lif_steps``, the reference (``compiled``: under torch.compile)."""
        if kernels.wanted(current):
            from ..kernels.lif import fused_lif  # imports triton: only once a kernel runs
            return fused_lif(current, self.lam, self.v_th, self.surrogate, self.alpha, self.detach_reset)
        return compiling.maybe(lif_steps, compiled)(state_precision(current), *self._dynamics())

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
    return v_mem, spike(v_mem - v_th, surrogate, alpha)


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


def accumulation_weight(lam: float, t: int) -> float:
    """c[t] = sum_{k<t} lam^k = (1 - lam^t) / (1 - lam), for 1-based step t.

    c[t] is the accumulated weight of a constant input (SAF's bias factor), and c[T]
    normalises the accumulated spike A[T] into the weighted firing rate of Spike
    Representation (A[T] = sum_t lam^(T-t) s[t] has weights summing to c[T]).
    """
    return (1.0 - lam ** t) / (1.0 - lam)
