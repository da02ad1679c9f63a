"""Multi-spike LIF with an absolute refractory period, computed block by block
(Taylor et al., NeurIPS 2023, "Addressing the speed-accuracy simulation
trade-off for adaptive spiking neurons" ("Blocks"); methods.md).

The neuron (the rule both implementations follow exactly):

    v[t] = beta v[t-1] + I[t],  s[t] = H(v[t] - threshold)   when not refractory
    after a spike at t: v is reset to 0 and the neuron is refractory for R steps
    (t+1 .. t+R): no spike, v clamped to 0 (their input is discarded); at t+R+1 it
    integrates again from 0, v[t+R+1] = I[t+R+1].

Recorded membrane: v[t] before the reset (the value compared with the threshold), 0
while refractory. R = 0 is the ordinary LIF with hard reset to 0.

Blocks: split time into blocks of L = R + 1 steps. A neuron fires at most once per
block (after a spike at position q it is refractory for the rest of the block), so
inside a block the single-spike machinery applies: the membrane without reset for the
block's L steps at once from its initial value, and the first crossing by the double
cumsum (``neurons.single_spike``). Only the blocks run in sequence: sequential depth
ceil(T / L) instead of T. Across a block boundary:
  * no spike in block i: block i+1 starts from v = the last membrane of block i;
  * spike at position q of block i: the refractory steps q+1..q+R cover the rest of
    block i and positions 0..q-1 of block i+1, so block i+1 starts from v = 0 with its
    input at positions < q zeroed (its membrane there is 0 < threshold: no spike).
Gradients are those of the sequential neuron under autograd: dS[t]/dv[t] is the
fast-sigmoid surrogate at every step where the neuron can fire (inside a block: up to
and including its first crossing, outside the refractory steps), zero while refractory;
the reset and refractory masks are constants (the authors' ``detach_spike_grad``). So
the blocks form is an exact fast path of ``sequential_refractory_lif`` in spikes,
membrane and gradients (tests/test_blocks.py, float64). The authors' Blocks code instead
passes the gradient straight through the double cumsum as the single-spike neuron does,
which also gives the post-spike steps of a block a gradient; that is not the gradient
of the neuron it computes, so it is not used here.
"""
from __future__ import annotations

import torch
from torch import nn

from .single_spike import apply_decay_matrix, decay_from_tau, decay_matrix, flat_decay
from .surrogate import check_surrogate, fire


def _check(threshold: float, refractory: int) -> None:
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if int(refractory) != refractory or refractory < 0:
        raise ValueError(f"refractory period must be an integer >= 0, got {refractory}")


def blocks_lif(current: torch.Tensor, beta: torch.Tensor | float, threshold: float, refractory: int,
               scale: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Refractory LIF by blocks of R + 1 steps: current [T, B, ...] -> (spikes, membrane), both [T, B, ...]."""
    _check(threshold, refractory)
    T, B = current.shape[:2]
    L = int(refractory) + 1
    n_blocks = -(-T // L)
    beta = flat_decay(torch.as_tensor(beta, dtype=current.dtype, device=current.device), current.shape[2:])
    flat = current.reshape(T, B, -1)  # [T, B, M]
    padded = torch.cat([flat, flat.new_zeros(n_blocks * L - T, *flat.shape[1:])])  # zeros after T
    blocks = padded.reshape(n_blocks, L, *flat.shape[1:])  # [n, L, B, M]
    position = torch.arange(L, device=current.device).view(L, 1, 1)  # [L, 1, 1]
    decay = decay_matrix(beta, L)  # [1 or M, L, L]
    rise = beta ** (position + 1).to(current.dtype)  # beta^(j+1): [L, 1, 1 or M]
    v_start = torch.zeros_like(flat[0])  # membrane before the block [B, M]
    refractory_until = torch.zeros_like(flat[0], dtype=torch.long)  # first free position
    spikes, v_mems = [], []
    for block in blocks:  # [L, B, M]
        free = position >= refractory_until  # [L, B, M]
        v_mem = apply_decay_matrix(decay, block * free) + rise * v_start  # [L, B, M]
        block_spikes = fire(v_mem, threshold, "fast_sigmoid", scale) * can_fire(v_mem, threshold, free)
        fired = block_spikes.detach()  # at most one per neuron and block
        spikes.append(block_spikes)
        v_mems.append(v_mem)
        v_start = v_mem[-1] * (1 - fired.sum(0))  # reset to 0 where the block spiked
        refractory_until = (fired * position).sum(0).long()  # spike position q (0 if none)
    spikes, v_mem = torch.stack(spikes), torch.stack(v_mems)  # [n, L, B, M]
    fired = spikes.detach()
    v_mem = v_mem * (1 - (fired.cumsum(1) - fired))  # 0 after the spike: refractory
    out_shape = (n_blocks * L, *current.shape[1:])
    return spikes.reshape(out_shape)[:T], v_mem.reshape(out_shape)[:T]


def can_fire(v_mem: torch.Tensor, threshold: float, free: torch.Tensor) -> torch.Tensor:
    """Steps of a block where the neuron may fire: not refractory (``free``) and no
    crossing earlier in the block. v_mem [L, B, M] -> mask [L, B, M] (no gradient)."""
    above = (v_mem.detach() >= threshold).to(v_mem.dtype)  # [L, B, M]
    return free * (above.cumsum(0) == above)  # crossings before t: cumsum - current = 0


def sequential_refractory_lif(current: torch.Tensor, beta: torch.Tensor | float, threshold: float,
                              refractory: int, scale: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the refractory LIF one step at a time (module docstring's rule).
    current [T, B, ...] -> (spikes, membrane before reset, 0 while refractory)."""
    _check(threshold, refractory)
    beta = torch.as_tensor(beta, dtype=current.dtype, device=current.device)
    beta = flat_decay(beta, current.shape[2:]).view(current.shape[2:] if beta.numel() > 1 else ())
    v_mem = torch.zeros_like(current[0])
    steps_left = torch.zeros_like(current[0], dtype=torch.long)  # refractory steps still to serve
    spikes, v_mems = [], []
    for current_t in current:
        active = (steps_left == 0).to(current.dtype)
        v_mem = (beta * v_mem + current_t) * active
        spike_t = fire(v_mem, threshold, "fast_sigmoid", scale) * active
        fired = spike_t.detach() > 0
        steps_left = torch.where(fired, torch.full_like(steps_left, int(refractory)),
                                 (steps_left - 1).clamp(min=0))
        spikes.append(spike_t)
        v_mems.append(v_mem)
        v_mem = v_mem * (~fired).to(v_mem.dtype)  # reset to 0
    return torch.stack(spikes), torch.stack(v_mems)


class RefractoryLIF(nn.Module):
    """LIF with absolute refractory period ``refractory`` (R) for [T, B, ...] currents:
    ``forward`` by blocks of R + 1 steps, ``reference`` one step at a time."""

    def __init__(self, tau: float = 10.0, threshold: float = 1.0, refractory: int = 4,
                 scale: float = 10.0) -> None:
        super().__init__()
        _check(threshold, refractory)
        check_surrogate("fast_sigmoid", scale)
        self.beta = decay_from_tau(tau)
        self.threshold, self.refractory, self.scale = float(threshold), int(refractory), float(scale)

    def forward(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return blocks_lif(current, self.beta, self.threshold, self.refractory, self.scale)

    def reference(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sequential_refractory_lif(current, self.beta, self.threshold, self.refractory, self.scale)
