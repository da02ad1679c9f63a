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

Blocks: split time into blocks of L steps, L <= R + 1 (default R + 1, the authors'
choice; shorter blocks give the same neuron with more sequential steps). A neuron fires at
most once per block (after a spike it is refractory for R >= L - 1 steps, which cover the
rest of the block), so inside a block the single-spike machinery applies: the membrane
without reset for the block's L steps at once from its initial value, and the first
crossing (``neurons.single_spike``). Only the blocks run in sequence: sequential depth
ceil(T / L) instead of T. Across a block boundary each neuron carries its membrane and the
refractory steps it still has to serve:
  * no spike in block i: block i+1 starts from v = the last membrane of block i (0 if the
    neuron was refractory through block i), with max(0, k - L) refractory steps left of
    the k it had;
  * spike at position q of block i: the refractory steps q+1..q+R cover the rest of
    block i and the first q + R + 1 - L positions of block i+1 (more than a block when
    L < R + 1), so block i+1 starts from v = 0 with its input at those positions zeroed
    (its membrane there is 0 < threshold: no spike).
Gradients are those of the sequential neuron under autograd: dS[t]/dv[t] is the
fast-sigmoid surrogate at every step where the neuron can fire (inside a block: up to
and including its first crossing, outside the refractory steps), zero while refractory;
the reset and refractory masks are constants (the authors' ``detach_spike_grad``), and
the decay beta gets its exact gradient (``trainable_decay``). So the blocks form is an
exact fast path of ``sequential_refractory_lif`` in spikes, membrane and gradients
(tests/test_blocks.py, float64). The authors' Blocks code instead
passes the gradient straight through the double cumsum as the single-spike neuron does,
which also gives the post-spike steps of a block a gradient; that is not the gradient
of the neuron it computes, so it is not used here.
"""
from __future__ import annotations

import torch

from .. import compiling
from .single_spike import Decaying, apply_decay_matrix, decay_matrix, flat_decay
from .surrogate import check_surrogate, fire, state_precision


def check_refractory(threshold: float, refractory: int, block_length: int | None = None) -> int:
    """ValueError for a bad threshold, refractory period R or block length L; returns L
    (R + 1 when None)."""
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if isinstance(refractory, bool) or int(refractory) != refractory or refractory < 0:
        raise ValueError(f"refractory period must be an integer >= 0, got {refractory}")
    if block_length is None:
        return int(refractory) + 1
    if isinstance(block_length, bool) or int(block_length) != block_length or not 1 <= block_length <= refractory + 1:
        raise ValueError(f"block length must be an integer from 1 to refractory + 1 = {int(refractory) + 1} "
                         f"(a neuron fires at most once per block), got {block_length}")
    return int(block_length)


def blocks_lif(current: torch.Tensor, beta: torch.Tensor | float, threshold: float, refractory: int,
               scale: float = 10.0, block_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Refractory LIF by blocks of L steps (``block_length``, default R + 1): current
    [T, B, ...] -> (spikes, membrane), both [T, B, ...]."""
    L = check_refractory(threshold, refractory, block_length)
    T, B = current.shape[:2]
    n_blocks = -(-T // L)
    beta = flat_decay(torch.as_tensor(beta, dtype=current.dtype, device=current.device), current.shape[2:])
    flat = current.reshape(T, B, -1)  # [T, B, M]
    padded = torch.cat([flat, flat.new_zeros(n_blocks * L - T, *flat.shape[1:])])  # zeros after T
    blocks = padded.reshape(n_blocks, L, *flat.shape[1:])  # [n, L, B, M]
    position = torch.arange(L, device=current.device).view(L, 1, 1)  # [L, 1, 1]
    decay = decay_matrix(beta, L)  # [1 or M, L, L]
    rise = beta ** (position + 1).to(current.dtype)  # beta^(j+1): [L, 1, 1 or M]
    v_start = torch.zeros_like(flat[0])  # membrane before the block [B, M]
    steps_left = torch.zeros_like(flat[0], dtype=torch.long)  # refractory steps at the block's start
    spikes, v_mems = [], []
    for block in blocks:  # [L, B, M]
        free = position >= steps_left  # [L, B, M]
        v_mem = apply_decay_matrix(decay, block * free) + rise * v_start  # [L, B, M]
        block_spikes = fire(v_mem, threshold, "fast_sigmoid", scale) * can_fire(v_mem, threshold, free)
        fired = block_spikes.detach()  # at most one per neuron and block
        spiked = fired.sum(0)  # [B, M], 0 or 1
        spikes.append(block_spikes)
        v_mems.append(v_mem)
        v_start = v_mem[-1] * (1 - spiked)  # reset to 0 where the block spiked
        after_spike = (fired * position).sum(0).long() + int(refractory) + 1 - L  # [B, M]
        steps_left = torch.where(spiked > 0, after_spike, (steps_left - L).clamp(min=0))
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


def refractory_step(v_mem: torch.Tensor, steps_left: torch.Tensor, current_t: torch.Tensor,
                    beta: torch.Tensor, threshold: float, refractory: int, scale: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the refractory LIF (module docstring's rule) from the membrane after
    the last reset and the refractory steps still to serve, both [B, ...]: returns
    (spike, membrane before reset, membrane after reset, steps left), each [B, ...]."""
    active = (steps_left == 0).to(current_t.dtype)
    v_mem = (beta * v_mem + current_t) * active
    spike = fire(v_mem, threshold, "fast_sigmoid", scale) * active
    fired = spike.detach() > 0
    steps_left = torch.where(fired, torch.full_like(steps_left, int(refractory)), (steps_left - 1).clamp(min=0))
    return spike, v_mem, v_mem * (~fired).to(v_mem.dtype), steps_left


def sequential_refractory_lif(current: torch.Tensor, beta: torch.Tensor | float, threshold: float,
                              refractory: int, scale: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the refractory LIF one step at a time (``refractory_step``).
    current [T, B, ...] -> (spikes, membrane before reset, 0 while refractory)."""
    check_refractory(threshold, refractory)
    beta = neuron_decay(beta, current)
    v_mem = torch.zeros_like(current[0])
    steps_left = torch.zeros_like(current[0], dtype=torch.long)  # refractory steps still to serve
    spikes, v_mems = [], []
    for current_t in current:
        spike_t, v_fired, v_mem, steps_left = refractory_step(v_mem, steps_left, current_t, beta, threshold,
                                                              refractory, scale)
        spikes.append(spike_t)
        v_mems.append(v_fired)
    return torch.stack(spikes), torch.stack(v_mems)


def neuron_decay(beta: torch.Tensor | float, current: torch.Tensor) -> torch.Tensor:
    """beta as a scalar tensor or shaped like one sample's neurons current.shape[2:]."""
    beta = torch.as_tensor(beta, dtype=current.dtype, device=current.device)
    return flat_decay(beta, current.shape[2:]).view(current.shape[2:] if beta.numel() > 1 else ())


class RefractoryLIF(Decaying):
    """LIF with absolute refractory period ``refractory`` (R) for [T, B, ...] currents:
    ``forward`` by blocks of ``block_length`` steps (default R + 1), ``reference`` one step
    at a time. ``trainable_decay`` learns one beta per neuron of ``neuron_shape`` (clamped
    to [0, 1]), as ``SingleSpikeLIF`` does."""

    def __init__(self, tau: float = 10.0, threshold: float = 1.0, refractory: int = 4,
                 scale: float = 10.0, block_length: int | None = None, trainable_decay: bool = False,
                 neuron_shape: tuple[int, ...] = ()) -> None:
        self.block_length = check_refractory(threshold, refractory, block_length)
        check_surrogate("fast_sigmoid", scale)
        if trainable_decay and not neuron_shape:
            raise ValueError("trainable_decay needs neuron_shape (one beta per neuron)")
        super().__init__(tau, tuple(neuron_shape), trainable_decay)
        self.threshold, self.refractory, self.scale = float(threshold), int(refractory), float(scale)

    def forward(self, current: torch.Tensor, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """current [T, B, ...] -> (spikes, membrane), both [T, B, ...] (``compiled``: under torch.compile)."""
        current = state_precision(current)
        layer = compiling.maybe(blocks_lif, compiled)
        return layer(current, self.beta.to(current.dtype), self.threshold, self.refractory, self.scale,
                     self.block_length)

    def reference(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same layer one step at a time (``sequential_refractory_lif``)."""
        current = state_precision(current)
        return sequential_refractory_lif(current, self.beta.to(current.dtype), self.threshold, self.refractory,
                                         self.scale)
