"""Leaky integrate-and-fire neuron, the OTTT/SAF convention (methods.md, "LIF").

    u[t] = lam * (u[t-1] - V_th * s[t-1]) + I[t],   s[t] = H(u[t] - V_th),   lam = 1 - 1/tau

Soft reset (subtract V_th), no input decay; equals SpikingJelly's
``LIFNode(tau, decay_input=False, v_reset=None)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .surrogate import check_surrogate, spike


@dataclass(frozen=True)
class LIF:
    """Hyperparameters and one-step dynamics of the LIF neuron.

    Args:
        tau: membrane time constant (> 1); the leak is ``lam = 1 - 1/tau``.
        v_th: firing threshold (> 0).
        surrogate: backward of H: "sigmoid", "atan", "fast_sigmoid" or "rect".
        alpha: surrogate sharpness.
        detach_reset: cut the gradient through the reset term (BPTT only; the online
            methods drop all temporal gradients anyway).
    """

    tau: float = 2.0
    v_th: float = 1.0
    surrogate: str = "sigmoid"
    alpha: float = 4.0
    detach_reset: bool = False

    def __post_init__(self) -> None:
        if not self.tau > 1.0:
            raise ValueError(f"LIF tau must be > 1 (leak 1 - 1/tau in (0, 1)), got {self.tau}")
        if not self.v_th > 0.0:
            raise ValueError(f"LIF v_th must be > 0, got {self.v_th}")
        check_surrogate(self.surrogate, self.alpha)

    @property
    def lam(self) -> float:
        """Leak factor lambda = 1 - 1/tau."""
        return 1.0 - 1.0 / self.tau

    def fire(self, v_mem: torch.Tensor) -> torch.Tensor:
        """s = H(u - V_th) with the surrogate derivative in backward."""
        return spike(v_mem - self.v_th, self.surrogate, self.alpha)

    def step(
        self, v_mem: torch.Tensor, spike_prev: torch.Tensor, current: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: returns (v_mem[t], spike[t]) from v_mem[t-1], spike[t-1], I[t]."""
        reset = spike_prev.detach() if self.detach_reset else spike_prev
        v_mem = self.lam * (v_mem - self.v_th * reset) + current
        return v_mem, self.fire(v_mem)

    def run(self, current: torch.Tensor) -> torch.Tensor:
        """All T steps from rest: current [T, B, ...] -> spikes [T, B, ...]."""
        v_mem = torch.zeros_like(current[0])
        spike_t = torch.zeros_like(current[0])
        spikes = []
        for current_t in current:
            v_mem, spike_t = self.step(v_mem, spike_t, current_t)
            spikes.append(spike_t)
        return torch.stack(spikes)


def accumulation_weight(lam: float, t: int) -> float:
    """c[t] = sum_{k<t} lam^k = (1 - lam^t) / (1 - lam), for 1-based step t.

    c[t] is the accumulated weight of a constant input (SAF's bias factor), and c[T]
    normalises the accumulated spike A[T] into the weighted firing rate of Spike
    Representation (A[T] = sum_t lam^(T-t) s[t] has weights summing to c[T]).
    """
    return (1.0 - lam ** t) / (1.0 - lam)
