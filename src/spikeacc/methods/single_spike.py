"""Accelerated single-spike training (Taylor, King & Harper 2022; methods.md
"Accelerated single-spike training").

Trains the SpikingNet's synapses with single-spike LIF neurons (each fires at most once,
``spikeacc.neurons.single_spike``) in place of ``net.neuron`` (the net's LIF settings are
not used). Every layer is computed for all T steps at once: one synapse product on
[T*B, ...] and the vectorised neuron, no loop over time. The readout is a non-spiking
leaky membrane (tau_readout = 20); logits are its max over time (paper v1) or its sum
over time (v2), and the loss is cross-entropy on those logits.

Defaults follow the paper's v2 (the ``block`` code): tau_hidden = 10, tau_readout = 20,
threshold = 1, fast-sigmoid scale 10 (v1 used 100), readout "sum" (v1: "max").

``sequential=True`` ("single-spike-seq") runs the same model with the sequential
reference neuron (a loop over t with the at-most-once rule, identical spikes and
gradients) and a loop readout: the baseline of the speed benchmark.

``trainable_decay=True`` learns one beta per hidden neuron. Those parameters live on the
net (submodule ``single_spike_neurons``, so they are saved with it); call
``prepare(net)`` before building the optimizer so that it holds them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models import SpikingNet
from ..neurons.single_spike import (
    MEMBRANE_FORMS, READOUTS, SingleSpikeLIF, decay_from_tau, readout_logits)
from .base import Inference, Inputs, Method, over_time, spike_counts

DECAY_MODULE = "single_spike_neurons"


class SingleSpike(Method):
    """Single-spike LIF network trained with all T steps vectorised."""

    name = "single-spike"

    def __init__(self, T: int, tau_hidden: float = 10.0, tau_readout: float = 20.0,
                 threshold: float = 1.0, scale: float = 10.0, readout: str = "sum",
                 trainable_decay: bool = False, sequential: bool = False, form: str = "auto") -> None:
        super().__init__(T)
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")
        if form not in MEMBRANE_FORMS:
            raise ValueError(f"unknown membrane form {form!r}; choose one of {', '.join(MEMBRANE_FORMS)}")
        self.readout_beta = decay_from_tau(tau_readout)
        self.readout, self.trainable_decay, self.sequential = readout, trainable_decay, sequential
        self.form = "loop" if sequential else form
        self.neuron = SingleSpikeLIF(tau_hidden, threshold, scale, form=self.form)  # shared decay
        self._tau_hidden = tau_hidden
        if sequential:
            self.name = "single-spike-seq"

    def prepare(self, net: SpikingNet) -> list[SingleSpikeLIF]:
        """One neuron per hidden layer. With trainable decay they are created once and
        attached to ``net`` (call this before building the optimizer)."""
        if not self.trainable_decay:
            return [self.neuron] * len(net.hidden)
        if not hasattr(net, DECAY_MODULE):
            shapes = hidden_shapes(net)
            neurons = [SingleSpikeLIF(self._tau_hidden, self.neuron.threshold, self.neuron.scale,
                                      trainable_decay=True, neuron_shape=shape, form=self.form)
                       for shape in shapes]
            param = next(net.parameters())
            net.add_module(DECAY_MODULE, nn.ModuleList(neurons).to(param.device, param.dtype))
        return list(getattr(net, DECAY_MODULE))

    def forward(self, net: SpikingNet, inputs: Inputs) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Hidden spikes per layer [T, B, ...] and logits [B, K], with graph."""
        T = inputs.T
        h = inputs.x  # [B, ...] static or [T, B, ...]
        spikes = []
        for synapse, neuron in zip(net.hidden, self.prepare(net)):
            current = apply_synapse(synapse, h, T, static=inputs.static and not spikes)
            h = (neuron.reference(current) if self.sequential else neuron(current))[0]
            spikes.append(h)
        out = apply_synapse(net.readout, h, T, static=inputs.static and not spikes)  # [T, B, K]
        return spikes, readout_logits(out, self.readout_beta, self.readout, self.form)

    def loss_and_grad(self, net: SpikingNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, logits = self.forward(net, self.inputs(net, x, y))
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return loss.detach(), logits.detach()

    def step(self, net: SpikingNet, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.trainable_decay:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if any(id(n.beta_raw) not in held for n in self.prepare(net)):
                raise ValueError("single-spike trainable_decay: the optimizer lacks the decay "
                                 "parameters; call method.prepare(net) before building it")
        return super().step(net, optimizer, x, y)

    @torch.no_grad()
    def infer(self, net: SpikingNet, x: torch.Tensor) -> Inference:
        spikes, logits = self.forward(net, self.inputs(net, x))
        return Inference(logits, spike_counts(spikes))


def apply_synapse(synapse: nn.Module, h: torch.Tensor, T: int, static: bool) -> torch.Tensor:
    """The synapse on all T steps with one product: [T, B, ...] -> [T, B, ...]. A static
    input [B, ...] is the same every step, so it is applied once and broadcast."""
    if static:
        current = synapse(h)  # [B, ...]
        return current.unsqueeze(0).expand(T, *current.shape)
    return over_time(synapse, h)  # [T, B, ...]


@torch.no_grad()
def hidden_shapes(net: SpikingNet) -> list[tuple[int, ...]]:
    """Neuron shape of each hidden layer ([N] or [C, H, W]), from a one-sample pass."""
    param = next(net.parameters())
    h = torch.zeros(1, *net.sample_shape, device=param.device, dtype=param.dtype)
    shapes = []
    for synapse in net.hidden:
        h = synapse(h)
        shapes.append(tuple(h.shape[1:]))
    return shapes
