"""Blocks: multi-spike training with all steps of a block vectorised (Taylor et al.,
NeurIPS 2023, "Addressing the speed-accuracy simulation trade-off for adaptive spiking
neurons"; methods.md "Accelerated single-spike training", its extension; authors' code
webstorms/Blocks).

The single-spike method (``methods/single_spike.py``) with the refractory LIF of
``spikeacc.neurons.blocks`` in place of the single-spike neuron at every neuron site: a
neuron may fire once per block of L <= R + 1 steps (R the absolute refractory period,
``refractory``; L ``block_length``, default R + 1), after a spike its membrane is reset to
0 and it is refractory for R steps. Every op runs once for all T steps, the neuron block
by block (sequential depth ceil(T / L) instead of T); its spikes, membrane and every
gradient equal the sequential refractory LIF's (``sequential=True``, "blocks-seq": the
same network one step at a time, the speed benchmark's baseline; tests/test_blocks*.py).
The readout is the single-spike method's non-spiking leaky membrane (tau_readout = 20)
summed over time ("sum", the authors' Blocks readout) or its maximum ("max"); the loss is
cross-entropy on those logits. ``trainable_decay=True`` learns one beta per hidden neuron
and per output (the authors' Blocks trains beta), the parameters living in the network
(submodules ``blocks`` and ``blocks_readout``; call ``prepare(net)`` before building the
optimizer).

``deploy(net, x)`` runs the trained weights as a running spiking network: one time step
after another through every layer, each neuron keeping only its membrane and refractory
count (what a neuromorphic chip or an online simulator runs); it gives ``infer``'s spikes
and logits. With ``refractory=0`` the neuron is spikeacc's LIF with a hard reset to 0
(``LIF(beta=exp(-1 / tau), reset="hard")``), so the hidden layers also deploy as a LIF
network (``spiking_inference``, NIR export) with the same spikes.

Defaults: tau_hidden = 10, threshold 1, fast-sigmoid scale 10 (the single-spike
method's), R = 4 (blocks of 5 steps; the authors' experiments use 10 to 50 steps at 1 ms).
The authors' Blocks neuron also adapts its threshold (ALIF) and may be recurrent; neither
is part of this method, which runs feed-forward networks.
"""
from __future__ import annotations

import torch
from torch import nn

from ..neurons.blocks import RefractoryLIF, check_refractory, neuron_decay, refractory_step
from ..neurons.surrogate import state_precision
from .base import Inference, per_sample, run_window
from .single_spike import SingleSpike


class Blocks(SingleSpike):
    """Refractory LIF network trained block by block (module docstring)."""

    name = "blocks"
    decay_module = "blocks"
    readout_module = "blocks_readout"

    def __init__(self, T: int, tau_hidden: float = 10.0, tau_readout: float = 20.0, threshold: float = 1.0,
                 scale: float = 10.0, refractory: int = 4, block_length: int | None = None,
                 readout: str = "sum", trainable_decay: bool = False, sequential: bool = False) -> None:
        self.block_length = check_refractory(threshold, refractory, block_length)
        self.refractory = int(refractory)
        super().__init__(T, tau_hidden, tau_readout, threshold, scale, readout, trainable_decay, sequential)

    def site_neuron(self, trainable_decay: bool = False, neuron_shape: tuple[int, ...] = ()) -> nn.Module:
        return RefractoryLIF(self._tau_hidden, self.threshold, self.refractory, self.scale, self.block_length,
                             trainable_decay, neuron_shape)

    @torch.no_grad()
    def deploy(self, net: nn.Module, x: torch.Tensor) -> Inference:
        """The weights as a running refractory LIF network, one time step at a time through
        every layer: logits [B, K] and spikes per sample of every site (module docstring)."""
        program, inputs, ctx = self.setup(net, x)
        site_neurons, readout = self.prepare(net)
        neurons = dict(zip((site.index for site in program.sites), site_neurons))
        states: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        counts = {site.index: 0.0 for site in program.sites}

        def fire(site, current: torch.Tensor) -> torch.Tensor:  # current [1, B, ...]
            current = state_precision(current[0])
            neuron = neurons[site.index]
            v_mem, steps_left = states.get(site.index, (torch.zeros_like(current),
                                                         torch.zeros_like(current, dtype=torch.long)))
            spike, _, v_mem, steps_left = refractory_step(v_mem, steps_left, current, neuron_decay(
                neuron.beta, current.unsqueeze(0)), neuron.threshold, neuron.refractory, neuron.scale)
            states[site.index] = (v_mem, steps_left)
            counts[site.index] = counts[site.index] + per_sample(spike)
            return spike.unsqueeze(0)

        combine = torch.add if readout.reduce == "sum" else torch.maximum  # over time
        v_out, logits = 0.0, None
        for t in range(self.T):
            _, out = run_window(program, ctx, inputs.at(t), 1, 1, fire)  # [1, B, K]
            v_out = readout.beta.to(out.dtype) * v_out + state_precision(out[0])  # the readout's membrane [B, K]
            logits = v_out if logits is None else combine(logits, v_out)
        return Inference(logits, [counts[site.index] for site in program.sites])
