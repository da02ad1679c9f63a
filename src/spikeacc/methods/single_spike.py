"""Accelerated single-spike training (Taylor, King & Harper 2022; methods.md
"Accelerated single-spike training").

Trains the network's weights with single-spike LIF neurons (each fires at most once,
``spikeacc.neurons.single_spike``) in place of its LIF neurons (their settings are not
used). Every op is computed for all T steps at once: one call on [T*B, ...] (a static
input's first ops once, broadcast over the steps) and the vectorised neuron, no loop
over time. Any op may sit between neurons. The readout is a non-spiking leaky membrane
(tau_readout = 20); logits are its max over time (paper v1) or its sum over time (v2),
and the loss is cross-entropy on those logits.

Defaults follow the paper's v2 (the ``block`` code): tau_hidden = 10, tau_readout = 20,
threshold = 1, fast-sigmoid scale 10 (v1 used 100), readout "sum" (v1: "max").

``sequential=True`` ("single-spike-seq") runs the same model with the sequential
reference neuron (a loop over t with the at-most-once rule, identical spikes and
gradients) and a loop readout: the baseline of the speed benchmark.

``trainable_decay=True`` learns one beta per neuron of every site and one per output of
the readout, as the authors' v2 code does. Those parameters live in the network (a
submodule ``single_spike`` of each LIF module and ``single_spike_readout`` of the module
that computes the output, so they are saved with it); call ``prepare(net)`` before
building the optimizer so that it holds them.

The Blocks method (``methods/blocks.py``) is this method with another neuron
(``site_neuron``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import graph
from ..graph import CallContext, Program
from ..neurons.single_spike import MEMBRANE_FORMS, READOUTS, LeakyReadout, SingleSpikeLIF
from .base import Inference, Inputs, Method, run_window, spike_counts

class SingleSpike(Method):
    """Single-spike LIF network trained with all T steps vectorised."""

    name = "single-spike"
    any_op = True
    neuron_rule = "own"
    decay_module = "single_spike"  # the submodule of a LIF that holds its trainable decay
    readout_module = "single_spike_readout"  # the submodule of the output's module that holds the readout's

    def __init__(self, T: int, tau_hidden: float = 10.0, tau_readout: float = 20.0,
                 threshold: float = 1.0, scale: float = 10.0, readout: str = "sum",
                 trainable_decay: bool = False, sequential: bool = False, form: str = "auto") -> None:
        super().__init__(T)
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; choose one of {', '.join(READOUTS)}")
        if form not in MEMBRANE_FORMS:
            raise ValueError(f"unknown membrane form {form!r}; choose one of {', '.join(MEMBRANE_FORMS)}")
        self.readout, self.trainable_decay, self.sequential = readout, trainable_decay, sequential
        self.form = "loop" if sequential else form
        self.threshold, self.scale = threshold, scale
        self._tau_hidden, self._tau_readout = tau_hidden, tau_readout
        self.neuron = self.site_neuron()  # shared decay
        self.readout_neuron = LeakyReadout(tau_readout, readout, form=self.form)  # shared decay
        if sequential:
            self.name = f"{self.name}-seq"

    def site_neuron(self, trainable_decay: bool = False, neuron_shape: tuple[int, ...] = ()) -> nn.Module:
        """The neuron of a site: [T, B, ...] currents -> (spikes, membrane) by ``forward``,
        and by the sequential ``reference``."""
        return SingleSpikeLIF(self._tau_hidden, self.threshold, self.scale, trainable_decay, neuron_shape, self.form)

    def prepare(self, net: nn.Module, sample_shape: tuple[int, ...] | None = None
                ) -> tuple[list[SingleSpikeLIF], LeakyReadout]:
        """One neuron per site and the readout. With trainable decay they are created once
        and attached to ``net`` (call this before building the optimizer); their shapes come
        from one sample of ``sample_shape`` (default: ``net.sample_shape``)."""
        program = graph.of(net)
        if not self.trainable_decay:
            return [self.neuron] * len(program.sites), self.readout_neuron
        holder = readout_holder(net, program, self.name)
        missing = [site for site in program.sites if not hasattr(site.module, self.decay_module)]
        if missing or not hasattr(holder, self.readout_module):
            sample_shape = sample_shape or getattr(net, "sample_shape", None)
            if sample_shape is None:
                raise ValueError(f"{self.name} trainable_decay: give prepare(net, sample_shape) "
                                 "(the network declares no sample_shape)")
            param = next(net.parameters())
            shapes, out_shape = site_shapes(program, param.new_zeros(1, *sample_shape))
            for site in missing:
                neuron = self.site_neuron(trainable_decay=True, neuron_shape=shapes[site.index])
                site.module.add_module(self.decay_module, neuron.to(param.device, param.dtype))
            if not hasattr(holder, self.readout_module):
                readout = LeakyReadout(self._tau_readout, self.readout, True, math.prod(out_shape), self.form)
                holder.add_module(self.readout_module, readout.to(param.device, param.dtype))
        program = graph.of(net)
        return ([getattr(site.module, self.decay_module) for site in program.sites],
                getattr(holder, self.readout_module))

    def forward(self, net: nn.Module, program: Program, inputs: Inputs, ctx: CallContext
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Spikes per site [T, B, ...] and logits [B, K], with graph."""
        site_neurons, readout = self.prepare(net)
        neurons = dict(zip((site.index for site in program.sites), site_neurons))

        def fire(site, current: torch.Tensor) -> torch.Tensor:
            neuron = neurons[site.index]
            return (neuron.reference(current) if self.sequential else neuron(current, self.compile))[0]

        x, x_steps = inputs.window(0, self.T, static_once=ctx.static_input is not None)
        spikes, out = run_window(program, ctx, x, x_steps, self.T, fire)  # out [T, B, K]
        logits = readout(out.flatten(2)).view(out.shape[1:])
        return [spikes[site.index] for site in program.sites], logits

    def loss_and_grad(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        program, inputs, ctx = self.setup(net, x, y)
        _, logits = self.forward(net, program, inputs, ctx)
        loss = F.cross_entropy(logits, y)
        self.backward(loss, ctx)
        return loss.detach(), logits.detach()

    def step(self, net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.trainable_decay:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            program = graph.of(net)
            holders = [(site.module, self.decay_module) for site in program.sites]
            holders.append((readout_holder(net, program, self.name), self.readout_module))
            if any(not hasattr(module, name) or id(getattr(module, name).beta_raw) not in held
                   for module, name in holders):
                raise ValueError(f"{self.name} trainable_decay: the optimizer lacks the decay "
                                 "parameters; call method.prepare(net) before building it")
        return super().step(net, optimizer, x, y)

    @torch.no_grad()
    def infer(self, net: nn.Module, x: torch.Tensor) -> Inference:
        spikes, logits = self.forward(net, *self.setup(net, x))
        return Inference(logits, spike_counts(spikes))


@torch.no_grad()
def site_shapes(program: Program, sample: torch.Tensor) -> tuple[dict[int, tuple[int, ...]], tuple[int, ...]]:
    """Neuron shape of each site ([N] or [C, H, W]), by node index, and the output's
    shape, from one step of ``sample`` [1, ...] (neurons silent)."""
    shapes = {}

    def record(site, current: torch.Tensor) -> torch.Tensor:
        shapes[site.index] = tuple(current.shape[2:])
        return torch.zeros_like(current)

    _, out = run_window(program, CallContext(1), sample, 1, 1, record)  # [1, 1, K]
    return shapes, tuple(out.shape[2:])


def readout_holder(net: nn.Module, program: Program, method: str) -> nn.Module:
    """The module that computes the network's output (its trainable readout decay lives
    there): the called module, or the module whose forward computes it."""
    node = program.nodes[program.output]
    holder = node.op.module if node.op is not None and node.op.module is not None else net.get_submodule(node.owner)
    if isinstance(holder, (nn.Sequential, nn.ModuleList)):
        raise ValueError(f"{method} trainable_decay: the output is computed by {node.describe()}; "
                         "the readout's decay needs a module there to live in")
    return holder
