"""Integrate-and-fire neuron with hard reset, the neuron of ASF-BP (Wu et al., AAAI 2021;
methods.md "ASF-BP").

    v[t] = leak * v_reset[t-1] + I[t],   s[t] = H(v[t] - V_th),   v_reset[t] = v[t] (1 - s[t])

``leak = 1`` is the plain IF neuron (the paper's default); ``leak < 1`` gives a leaky
IF neuron with hard reset (the authors' code applies the leak after the reset, as here).
A spike is emitted when v[t] >= V_th (the library's H(0) = 1), or with ``strict`` when
v[t] > V_th, as the authors' code does (their ``F.threshold`` keeps values above the
threshold). The two differ only when the membrane lands exactly on the threshold, which
is common where inputs are multiples of a fraction of it: the authors' pooling neurons
(threshold 0.75) integrate average-pooled spikes, multiples of 0.25.

ASF-BP never differentiates through the neuron, so it is simulated without a graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import compiling
from .surrogate import state_precision


@dataclass(frozen=True)
class IF:
    """Hyperparameters and no-graph dynamics of the (leaky) IF neuron with hard reset.

    Args:
        v_th: firing threshold (> 0).
        leak: membrane retention per step in (0, 1]; 1 is the non-leaky IF neuron.
        strict: fire on v > V_th (the authors' code) instead of v >= V_th.
    """

    v_th: float = 1.0
    leak: float = 1.0
    strict: bool = False

    def __post_init__(self) -> None:
        if not self.v_th > 0.0:
            raise ValueError(f"IF v_th must be > 0, got {self.v_th}")
        if not 0.0 < self.leak <= 1.0:
            raise ValueError(f"IF leak must be in (0, 1], got {self.leak}")

    def run(self, current: torch.Tensor, v_mem: torch.Tensor | None = None, compiled: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Simulate len(current) steps: current [S, B, ...] -> (spikes [S, B, ...],
        membrane after the last step [B, ...]). ``v_mem`` continues a previous window
        (None: from rest, v = 0); ``compiled``: under torch.compile."""
        if current.dim() < 2:
            raise ValueError(f"IF.run needs current [steps, batch, ...], got shape {tuple(current.shape)}")
        current = state_precision(current)
        v_mem = torch.zeros_like(current[0]) if v_mem is None else v_mem
        return compiling.maybe(if_steps, compiled)(current, v_mem, self.v_th, self.leak, self.strict)


@torch.no_grad()
def if_steps(current: torch.Tensor, v_mem: torch.Tensor, v_th: float, leak: float, strict: bool
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """v[t] = leak v[t-1] + I[t], s[t] = H(v[t] - V_th) (or v > V_th), reset to 0 where
    s[t] = 1, over current [S, B, ...] from v_mem [B, ...] (not modified)."""
    v_mem = v_mem.clone()
    spikes = torch.empty_like(current)
    compare = torch.gt if strict else torch.ge
    for t, current_t in enumerate(current):
        if leak != 1.0:
            v_mem.mul_(leak)
        v_mem.add_(current_t)
        compare(v_mem, v_th, out=spikes[t])  # s[t] = H(v[t] - V_th)
        v_mem.mul_(1.0 - spikes[t])  # hard reset to 0
    return spikes, v_mem
