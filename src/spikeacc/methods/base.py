"""What every training method shares: input layout, the Method interface, running a
network's graph over a window of steps, and the spiking inference path (the real LIF
network every LIF-based method deploys to)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import graph
from ..graph import CallContext, Pass, Program, Site
from . import rules


@dataclass
class Inference:
    """Output of a no-grad run: logits [B, K] and spikes per sample of every neuron
    site (in the network's order), each [B]."""

    logits: torch.Tensor
    spike_counts: list[torch.Tensor]


class Inputs:
    """An input batch seen as T steps: static x [B, ...] fed every step, or a sequence [T, B, ...].

    Which one: a network that declares ``sample_shape`` (spikeacc's models do) decides by
    it; otherwise x [B, ...] is static unless x.shape[0] == T, and then x is static if one
    sample x[:1] runs through the network to logits [1, K], else a sequence.
    """

    def __init__(self, x: torch.Tensor, T: int, net: nn.Module, program: Program) -> None:
        sample = getattr(net, "sample_shape", None)
        if sample is not None:
            static, sequence = _fits_declared(x, T, tuple(sample))
        else:
            static, sequence = x.dim() >= 2, x.dim() >= 3 and x.shape[0] == T
            if static and sequence:
                static = _runs_on(program, x[:1])
                sequence = not static
        if not (static or sequence):
            expected = f"*{tuple(sample)}" if sample is not None else "..."
            raise ValueError(f"input shape {tuple(x.shape)} fits neither [B, {expected}] nor [T={T}, B, {expected}]")
        self.static, self.batch = static, x.shape[0] if static else x.shape[1]
        self.x, self.T = x, T

    def at(self, t: int) -> torch.Tensor:
        """Input at step t (0-based): [B, ...]."""
        return self.x if self.static else self.x[t]

    def sequence(self) -> torch.Tensor:
        """All steps [T, B, ...] (a broadcast view for static input, no copy)."""
        return self.x.expand(self.T, *self.x.shape) if self.static else self.x

    def window(self, start: int, steps: int, static_once: bool) -> tuple[torch.Tensor, int]:
        """Steps start..start+steps-1 merged into the batch dim: ([S*B, ...], S). With
        ``static_once`` a static input is one step (S = 1), broadcast where it meets
        the other steps (its first products are computed once)."""
        if self.static and static_once:
            return self.x, 1
        part = self.sequence()[start:start + steps]
        return part.reshape(-1, *part.shape[2:]), steps


def _fits_declared(x: torch.Tensor, T: int, sample: tuple[int, ...]) -> tuple[bool, bool]:
    static = x.dim() >= 2 and _same_size(x.shape[1:], sample)
    sequence = x.dim() >= 3 and x.shape[0] == T and _same_size(x.shape[2:], sample)
    if static and sequence:  # [T, 1, ...]: an exact sample-shape match decides, else static
        sequence = tuple(x.shape[2:]) == sample and tuple(x.shape[1:]) != sample
        static = not sequence
    return static, sequence


def _same_size(shape: torch.Size, sample_shape: tuple[int, ...]) -> bool:
    return math.prod(shape) == math.prod(sample_shape)


@torch.no_grad()
def _runs_on(program: Program, batch: torch.Tensor) -> bool:
    """Does one step of ``batch`` (silent neurons) give logits [B, K]?"""
    try:
        _, out = run_window(program, CallContext(batch.shape[0]), batch, 1, 1,
                            lambda site, current: torch.zeros_like(current))
    except Exception:  # noqa: BLE001  (any failure means: not this layout)
        return False
    return out.dim() == 3


class Method:
    """A way to compute the loss gradient of a spiking network over T time steps.

    Subclasses implement ``loss_and_grad`` (accumulates into ``.grad``) and ``infer``.
    ``any_op``: the method runs any op between neurons; otherwise every op must be
    affine (``spikeacc.graph.ops``) and ``setup`` refuses the network before computing.
    ``neuron_rule``: the neuron settings it runs (``spikeacc.methods.rules``), checked by
    ``setup`` likewise. ``one_backward``: a training call backpropagates once (one loss per
    call), so the values computed once per call need no leaves (``CallContext``).
    """

    name: str = ""
    any_op: bool = False
    neuron_rule: str = "bptt"
    static_once: bool = True  # a static input's input-only ops once per call (CallContext)
    one_backward: bool = False  # one backward per training call: no leaves (CallContext)
    compile: bool = False  # neuron dynamics under torch.compile (spikeacc.compiling)

    def __init__(self, T: int) -> None:
        if int(T) != T or T <= 0:
            raise ValueError(f"T (time steps) must be a positive integer, got {T}")
        self.T = int(T)

    def loss_and_grad(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss (detached scalar) and logits [B, K]; adds the gradient to every parameter's
        .grad (a subclass calls ``backward`` below, not ``loss.backward()``)."""
        raise NotImplementedError

    @staticmethod
    def backward(loss: torch.Tensor, ctx: CallContext) -> None:
        """loss.backward(), then the gradients the input-only values collected (CallContext.flush)."""
        loss.backward()
        ctx.flush()

    def infer(self, net: nn.Module, x: torch.Tensor) -> Inference:
        raise NotImplementedError

    def predict(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] without a graph."""
        return self.infer(net, x).logits

    def step(self, net: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on the batch."""
        optimizer.zero_grad(set_to_none=True)
        loss, logits = self.loss_and_grad(net, x, y)
        self.before_update()
        optimizer.step()
        return loss, logits

    def begin_epoch(self, epoch: int) -> None:
        """Called by the trainer before the first step of each epoch (counted from 1);
        ASF-BP's epoch cadence of k refits reads it."""

    def before_update(self) -> None:
        """Called right before every optimiser update (``spikeacc.distributed.attach``
        makes it average the gradients over the processes)."""

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """A batch statistic summed over the processes (itself in one process)."""
        return tensor

    def setup(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor | None = None
              ) -> tuple[Program, Inputs, CallContext]:
        """The network's program (checked for this method), the input layout and the
        call's context; ValueError for a network or batch this method cannot run (one
        without any neuron included: it would train as a plain network)."""
        program = graph.of(net)
        if not program.sites:
            raise ValueError(f"{self.name}: the network has no spiking neuron (no spikeacc.LIF module), so it "
                             "would train as a plain network; add spikeacc.LIF after its layers")
        if not self.any_op:
            program.check_affine(self.name)
        rules.check(program, self.name, self.neuron_rule)
        inputs = Inputs(x, self.T, net, program)
        if y is not None and (y.dim() != 1 or y.shape[0] != inputs.batch):
            raise ValueError(f"labels shape {tuple(y.shape)} does not match batch size {inputs.batch}")
        static = inputs.x if inputs.static and self.static_once else None
        leaves = y is not None and not self.one_backward  # y: a training call
        return program, inputs, CallContext(inputs.batch, static, leaves=leaves, once=y is not None)


def per_sample(values: torch.Tensor) -> torch.Tensor:
    """Sum over everything but the batch dim: [B, ...] -> [B] (e.g. spikes per sample)."""
    return values.flatten(1).sum(1)


def steps_first(value: torch.Tensor, steps: int) -> torch.Tensor:
    """[S*B, ...] -> [S, B, ...]."""
    return value.view(steps, -1, *value.shape[1:])


Fire = Callable[[Site, torch.Tensor], torch.Tensor]


def run_window(program: Program, ctx: CallContext, x: torch.Tensor, x_steps: int, steps: int,
               fire: Fire, replace: dict[int, Callable[[torch.Tensor], torch.Tensor]] | None = None,
               output: bool = True, keep: bool = True, broadcast: bool = True
               ) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """The network over ``steps`` time steps at once, every op applied to all steps as one
    batch. x: [x_steps * B, ...] (x_steps 1: the same input every step).

    ``fire(site, current [S, B, ...]) -> spikes [S, B, ...]`` runs each neuron site
    (without ``broadcast``, a current that is the same at every step comes as [1, B, ...]);
    ``replace`` maps other node indices (e.g. ASF-BP's pooling) to a function of the
    node's own value [S, B, ...] that replaces it. Returns ({node index: its new value
    [S, B, ...]} (empty without ``keep``: each value is dropped once read), output
    [S, B, ...] or None without ``output``). A value computed for one step (static
    input) is broadcast to S steps where needed (no copy at a neuron).
    """
    values = Pass(program, ctx)
    static = x_steps == 1 and x is ctx.static_input  # the input-only ops once per call, not per window
    values.set_input(x, 1.0 if static else None, x_steps)
    stages = {site.index: site for site in program.sites}
    outputs = {}
    for index in sorted({*stages, *(replace or {})}):
        site = stages.get(index)
        current = values.take(site.input) if site else values.compute(index)
        current_steps = values.steps[site.input] if site else values.steps[index]
        current = steps_first(current, current_steps)
        if current_steps != steps and (broadcast or not site):  # one step, the same at every step
            current = current.expand(steps, *current.shape[1:])
        out = fire(site, current) if site else replace[index](current)  # [S, B, ...]
        values.set(index, out.reshape(-1, *out.shape[2:]), steps)
        if keep:
            outputs[index] = out
    if not output:
        return outputs, None
    out = values.take(program.output)
    out = steps_first(out, values.steps[program.output])
    return outputs, out.expand(steps, *out.shape[1:])


def lif_forward(program: Program, inputs: Inputs, ctx: CallContext, compiled: bool = False,
                spike_bits: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The real LIF network over all T steps (one product per op for the whole window):
    spikes of every site [T, B, ...] and the output per step o[t], [T, B, K].
    Differentiable (BPTT); with ``spike_bits`` a product that reads a site's spikes keeps
    them as bits (``graph.spike_products``). ``compiled``: each site's LIF loop under
    torch.compile."""
    if spike_bits and torch.is_grad_enabled():
        ctx.spike_inputs = program.spike_readers
    merged, steps = inputs.window(0, inputs.T, static_once=ctx.static_input is not None)
    spikes, per_step = run_window(program, ctx, merged, steps, inputs.T,
                                  lambda site, current: site.module.run(current, compiled, inputs.T),
                                  broadcast=False)
    return [spikes[site.index] for site in program.sites], per_step


def readout_leak(program: Program) -> float:
    """lambda_out: the leak of the sites the output reads (the largest if they differ;
    0 if it reads none). SAF and OTTT accumulate the readout's sources with it, and the
    weighted readout of SR and SAF-F weights o[t] by lambda_out^(T-t)."""
    return max((site.module.lam for site in program.readout_sites()), default=0.0)


def readout_logits(per_step: torch.Tensor, readout: str, lam: float) -> torch.Tensor:
    """Combine o[t] [T, B, K] into logits: "mean" over t, or "weighted" by lam^(T-t)
    (the weighted firing-rate readout of SR and SAF-F)."""
    if readout == "mean":
        return per_step.mean(0)
    T = per_step.shape[0]
    weights = per_step.new_tensor([lam ** (T - 1 - t) for t in range(T)])
    return torch.einsum("t,tbk->bk", weights, per_step) / weights.sum()


@torch.no_grad()
def spiking_inference(net: nn.Module, x: torch.Tensor, T: int, readout: str = "mean") -> Inference:
    """Run the weights as a real LIF spiking network (what neuromorphic hardware runs)."""
    program = graph.of(net)
    inputs = Inputs(x, T, net, program)
    spikes, per_step = lif_forward(program, inputs, CallContext(inputs.batch, inputs.x if inputs.static else None))
    lam = readout_leak(program) if readout == "weighted" else 0.0
    return Inference(readout_logits(per_step, readout, lam), spike_counts(spikes))


def spike_counts(spikes: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per site, spikes per sample: each [T, B, ...] -> [B]."""
    return [per_sample(s.sum(0)) for s in spikes]


def per_step_ce(per_step: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L = (1/T) sum_t CE(o[t], y) for o [T, B, K]."""
    T = per_step.shape[0]
    return F.cross_entropy(per_step.reshape(-1, per_step.shape[-1]), y.repeat(T))


def replace_grad(value: torch.Tensor, grad_path: torch.Tensor) -> torch.Tensor:
    """``value`` in forward, gradient through ``grad_path`` in backward."""
    return grad_path + (value - grad_path).detach()
