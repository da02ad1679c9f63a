"""ASF-BP: backpropagation on the accumulated spiking flow (Wu et al., AAAI 2021;
methods.md "ASF-BP"; authors' code neural-lab/ASF-BP).

Forward (no graph): integrate-and-fire neurons with hard reset (``neurons.if_neuron.asf_neuron``)
take the place of the network's LIF neurons and run for T steps. Per neuron site l the
method keeps the accumulated input and output of the whole window,

    X_l = sum_t (W_l s_{l-1}[t] + b_l) = W_l O_{l-1} + T b_l,    O_l = sum_t s_l[t],

with O_0 = sum_t x[t] (the accumulated input). The ops between neurons are affine, so
X_l is formed once from the counts instead of being summed step by step (the two differ
by float rounding only): every constant term (a bias, a current added every step) is
scaled by T. Pooling and residual additions are linear too: X_l = W_l pool(O_{l-1}) + T b_l
for a pooled conv, W O_{l-1} + O_skip for a residual block; average pooling of spikes
pools the spike counts and its backward is the pooling's adjoint (the default).

Spiking average pooling as in the authors' code (option ``pool_v_th``, 0.75 there): IF
neurons with threshold ``pool_v_th`` follow every average pooling of spikes (a pooling
whose input depends on a neuron, the readout's included); that pooling stage has
P = pool(O_{l-1}), its own counts O_p and its own k, fitted over all elements (the
authors' code fits pooling stages without the X >= O mask), and X_l = W_l O_p + T b_l.

Adaptive linear estimation (the paper's "equivalent network"): O_l ~ k_l X_l where
X_l > 0, with k_l fitted on the batch over the elements with X >= O,

    k_hat = sum O / sum X,   k <- 0.6 k_hat + 0.4 k,   k = 1 initially,

re-estimated every ``k_every`` training steps (one k per layer, or per channel); with
``k_every_epochs`` = N only in epochs 1, 1 + N, 1 + 2N, ... (the trainer says when an
epoch begins, ``Method.begin_epoch``): the authors' code refits k at every step of every
5th epoch (counted from 0 there: their epochs 0, 5, 10, ...), and not at all when that
cadence is not below the run's number of epochs, a case left out here.

Backward: ONE autograd pass over the accumulated values. Each hidden layer's output is
``replace_grad(O_l, k_l 1[X_l > 0] X_l)``: the forward value is the true count and
the gradient is

    delta_{l-1} = W_l^T (delta_l * k_l 1[X_l > 0]),   dL/dW_l = (delta_l * k_l 1[X_l > 0]) O_{l-1}^T,

so backward time and memory do not depend on T. The readout is non-spiking,
y = W_out O_L / (V_th T) + b_out (its constant terms scaled by V_th T), trained with MSE to the one-hot label (the paper's
loss; per-sample squared error summed over classes) or with cross-entropy, averaged over
the batch, or with ``reduction="sum"`` summed over it as the authors' code does
(``MSELoss(reduction="sum")``): B times the gradient, which matters beside Adam's weight
decay (theirs is 5e-4, ``spikeacc train --weight-decay``). Over several processes the
sum is over the global batch. The loss returned is the batch mean either way.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import OP, SITE, Bias, CallContext, Pass, Program, Site
from ..graph.ops import is_avgpool
from ..neurons.if_neuron import asf_neuron
from ..neurons.lif import LIF
from ..neurons.surrogate import state_precision
from .base import Inference, Inputs, Method, per_sample, replace_grad, run_window, steps_first

LOSSES = ("mse", "ce")
REDUCTIONS = ("mean", "sum")


Total = Callable[[torch.Tensor], torch.Tensor]  # sums a tensor over the processes of a run


def _local(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@dataclass
class AdaptiveGain:
    """The adaptive linear estimation model O ~ k X of one layer.

    ``k`` is a scalar tensor, or [C] (channel = dim 1 of [B, C, ...]) with ``per_channel``.
    ``fit_error`` is the relative residual ||O - k X|| / max(||O||, 1) over the elements
    with X > 0, measured with the k used in the last backward pass (counts are
    integers, so the floor of 1 only matters for a silent layer).
    """

    per_channel: bool = False
    masked: bool = True
    smoothing: float = 0.6
    k: torch.Tensor | None = None
    k_hat: torch.Tensor | None = None
    fit_error: float = float("nan")
    updates: int = 0

    def _reduce(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over all dims (scalar) or all but the channel dim ([C])."""
        if not self.per_channel:
            return values.sum()
        return values.transpose(0, 1).reshape(values.shape[1], -1).sum(1)

    def _expand(self, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return k.view(1, -1, *[1] * (like.dim() - 2)) if self.per_channel else k

    def estimate(self, x_acc: torch.Tensor, o_count: torch.Tensor, total: Total = _local) -> torch.Tensor:
        """k_hat = sum O / sum X over elements with X >= O (all elements unless ``masked``);
        1 where sum X < 1e-3 (as the authors' code), x_acc, o_count [B, ...]. ``total``
        sums the two over the processes of a distributed run (the batch is sharded)."""
        if self.per_channel and x_acc.dim() < 2:
            raise ValueError(f"per-channel k needs [B, C, ...] values, got shape {tuple(x_acc.shape)}")
        inside = (x_acc >= o_count).to(x_acc.dtype) if self.masked else torch.ones_like(x_acc)
        sums = total(torch.stack([self._reduce(o_count * inside), self._reduce(x_acc * inside)]))
        num, den = sums[0], sums[1]
        return torch.where(den < 1e-3, torch.ones_like(den), num / den.clamp_min(1e-3))

    def update(self, x_acc: torch.Tensor, o_count: torch.Tensor, total: Total = _local) -> None:
        """k <- smoothing * k_hat + (1 - smoothing) * k (k starts at 1)."""
        self.k_hat = self.estimate(x_acc, o_count, total)
        k_prev = torch.ones_like(self.k_hat) if self.k is None else self.k
        self.k = self.smoothing * self.k_hat + (1.0 - self.smoothing) * k_prev
        self.updates += 1

    def gain(self, x_acc: torch.Tensor) -> torch.Tensor:
        """dO/dX := k 1[X > 0], shaped like x_acc."""
        k = x_acc.new_ones(()) if self.k is None else self.k.to(x_acc.dtype)
        return self._expand(k, x_acc) * (x_acc > 0).to(x_acc.dtype)

    def record_fit(self, x_acc: torch.Tensor, o_count: torch.Tensor, total: Total = _local) -> None:
        """fit_error of the k in use on this batch (class docstring)."""
        active = x_acc > 0
        k_x = self.gain(x_acc) * x_acc
        squares = total(torch.stack([(o_count - k_x)[active].square().sum(), o_count[active].square().sum()]))
        self.fit_error = float(squares[0].sqrt() / squares[1].sqrt().clamp_min(1.0))

    def stats(self, layer: str) -> dict:
        k = 1.0 if self.k is None else self.k.tolist()
        k_hat = None if self.k_hat is None else self.k_hat.tolist()
        return {"layer": layer, "k": k, "k_hat": k_hat, "fit_error": self.fit_error, "updates": self.updates}


@dataclass
class Stage:
    """Where ASF-BP's IF neurons fire: a neuron site, or (``site`` None) the output of
    an average pooling of spikes (``pool_v_th``)."""

    index: int  # node index
    name: str  # the neuron's module name, or "pool.<module>"
    site: Site | None


def stages(program: Program, pool_neuron: LIF | None) -> list[Stage]:
    """The neuron sites and, with ``pool_neuron``, the poolings of spikes, in graph order."""
    found = [Stage(site.index, site.name, site) for site in program.sites]
    if pool_neuron is not None:
        for node in program.nodes:
            if node.kind == OP and is_avgpool(node.op) and any(
                    program.nodes[s].kind == SITE for s in program.sources_of[node.index]):
                name = node.owner if node.op.module is not None else f"{node.owner}.{node.name}".strip(".")
                found.append(Stage(node.index, f"pool.{name}", None))
    return sorted(found, key=lambda stage: stage.index)


@dataclass
class Flow:
    """Accumulated values of one forward window: O_0 = sum_t x[t] [B, ...], and the
    spike counts of every stage, by node index, each [B, ...]."""

    o_in: torch.Tensor
    counts: dict[int, torch.Tensor]


@torch.no_grad()
def accumulated_flow(program: Program, ctx: CallContext, inputs: Inputs, neuron: LIF,
                     chunk: int | None = None, pool_neuron: LIF | None = None, compiled: bool = False) -> Flow:
    """Run the IF network for T steps without a graph and accumulate its Flow.

    Time is processed in windows of ``chunk`` steps (None: all T at once); inside a
    window each op is one batched product over all its steps (a static input's first
    products once, broadcast over the steps), and the membranes carry over between
    windows, so forward memory is O(chunk) instead of O(T).
    ``pool_neuron``: IF neurons after the poolings of spikes (module docstring).
    """
    T = inputs.T
    chunk = T if chunk is None else chunk
    states: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    counts: dict[int, torch.Tensor] = {}

    def run(if_neuron: LIF, index: int, current: torch.Tensor) -> torch.Tensor:
        spikes, states[index] = if_neuron.free_run(current, states.get(index), compiled)  # [S, B, ...]
        counts[index] = counts[index] + spikes.sum(0) if index in counts else spikes.sum(0)
        return spikes

    pools = {stage.index: (lambda current, i=stage.index: run(pool_neuron, i, current))
             for stage in stages(program, pool_neuron) if stage.site is None}
    o_in: torch.Tensor | float = 0.0
    for start in range(0, T, chunk):
        steps = min(chunk, T - start)
        x, x_steps = inputs.window(start, steps, static_once=ctx.static_input is not None)
        o_in = o_in + (steps * x if x_steps == 1 else steps_first(x, steps).sum(0))
        run_window(program, ctx, x, x_steps, steps, lambda site, current: run(neuron, site.index, current),
                   pools, output=False, keep=False)
    return Flow(o_in, counts)


class ASF(Method):
    """ASF-BP on a network's weights with its own IF neurons (the network's LIF
    settings are not used).

    Options (``methods.get("asf", T, **options)``):
        v_th: IF threshold (paper: 1 for MNIST, 2 for CIFAR-10); leak: IF leak in (0, 1].
        loss: "mse" (to one-hot, the paper's) or "ce".
        per_channel: one k per channel (dim 1 of a neuron's output) instead of per neuron site.
        k_every: re-estimate k every this many training steps (0: keep k = 1).
        k_every_epochs: re-estimate k only in every this many-th epoch, from the first
            (0: every epoch; the authors' code: 5).
        reduction: "mean" or "sum" of the per-sample losses over the batch (the authors': sum).
        chunk: time steps simulated per batched window in the forward (None: all T at
            once; the default 10 bounds forward memory independently of T).
        pool_v_th: threshold of IF neurons after each pooling of spikes (the authors'
            spiking average pooling, 0.75 in their code); None pools counts linearly.
        strict: all IF neurons fire on v > V_th, as in the authors' code, instead of >=.

    The authors' configuration is ``pool_v_th=0.75, strict=True, k_every_epochs=5,
    reduction="sum"`` with Adam's weight decay 5e-4 and LeNet-5 without biases
    (``fc_bias=False``); spikeacc's default
    pools linearly and fires on >= (with spiking pooling, >= lets the 0.75 neurons fire on
    exact ties of three pooled spikes, which changes the fitted pooling k: 1.08 instead of
    0.89 on the authors' LeNet-5, and the gradients).
    """

    name = "asf"
    neuron_rule = "own"

    def __init__(self, T: int, v_th: float = 1.0, leak: float = 1.0, loss: str = "mse",
                 per_channel: bool = False, k_every: int = 1, k_every_epochs: int = 0, reduction: str = "mean",
                 chunk: int | None = 10, pool_v_th: float | None = None, strict: bool = False) -> None:
        super().__init__(T)
        if loss not in LOSSES:
            raise ValueError(f"ASF loss must be one of {LOSSES}, got {loss!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"ASF reduction must be one of {REDUCTIONS}, got {reduction!r}")
        for name, value in (("k_every", k_every), ("k_every_epochs", k_every_epochs)):
            if int(value) != value or value < 0:
                raise ValueError(f"ASF {name} must be an integer >= 0, got {value}")
        if chunk is not None and (int(chunk) != chunk or chunk <= 0):
            raise ValueError(f"ASF chunk must be a positive integer or None, got {chunk}")
        self.neuron = asf_neuron(v_th, leak, strict)
        self.pool_neuron = None if pool_v_th is None else asf_neuron(pool_v_th, strict=strict)
        self.loss, self.reduction, self.per_channel = loss, reduction, per_channel
        self.k_every, self.k_every_epochs, self.chunk = int(k_every), int(k_every_epochs), chunk
        self.gains: dict[str, AdaptiveGain] = {}  # one per stage, by stage name
        self.train_steps = 0
        self.epoch = 1  # set by the trainer (begin_epoch)

    def _stages(self, program: Program) -> list[Stage]:
        found = stages(program, self.pool_neuron)
        if list(self.gains) != [stage.name for stage in found]:
            self.gains = {stage.name: AdaptiveGain(self.per_channel, masked=stage.site is not None)
                          for stage in found}
        return found

    def state_dict(self) -> dict:
        """The estimation state (k per stage, step count) for checkpoints."""
        return {"train_steps": self.train_steps, "gains": {name: asdict(g) for name, g in self.gains.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.train_steps = state["train_steps"]
        self.gains = {name: AdaptiveGain(**g) for name, g in state["gains"].items()}

    def stats(self) -> list[dict]:
        """Per stage in graph order (neurons by module name, poolings "pool.<module>"):
        k in use, last k_hat, fit error of O vs kX, number of k updates."""
        return [gain.stats(name) for name, gain in self.gains.items()]

    def begin_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def refits_k(self) -> bool:
        """Does this training step re-estimate k (``k_every``, ``k_every_epochs``)?"""
        in_epoch = self.k_every_epochs == 0 or (self.epoch - 1) % self.k_every_epochs == 0
        return in_epoch and self.k_every > 0 and self.train_steps % self.k_every == 0

    def forward_flow(self, program: Program, ctx: CallContext, inputs: Inputs) -> Flow:
        """The no-graph T-step simulation of this method's network."""
        return accumulated_flow(program, ctx, inputs, self.neuron, self.chunk, self.pool_neuron, self.compile)

    def equivalent_network(self, program: Program, ctx: CallContext, flow: Flow, update_k: bool) -> torch.Tensor:
        """The graph pass on accumulated values: logits [B, K] whose backward is ASF-BP's."""
        scale = self.neuron.v_th * self.T
        hidden, readout = Pass(program, ctx, Bias(float(self.T))), Pass(program, ctx, Bias(scale))
        for values in (hidden, readout):
            values.set_input(flow.o_in, float(self.T))  # O_0 = T x for a static x [B, ...]
        for stage in self._stages(program):
            x_acc = hidden.take(stage.site.input) if stage.site else hidden.compute(stage.index)  # X_l
            o_est = _estimated(self.gains[stage.name], x_acc, flow.counts[stage.index], update_k, self.reduce_sum)
            hidden.set(stage.index, o_est)
            readout.set(stage.index, o_est)
        return readout.take(program.output) / scale

    def loss_and_grad(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        program, inputs, ctx = self.setup(net, x, y)
        self._stages(program)
        flow = self.forward_flow(program, ctx, inputs)
        logits = self.equivalent_network(program, ctx, flow, self.refits_k())
        self.train_steps += 1
        if self.loss == "mse":
            target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
            loss = (logits - target).pow(2).sum(1).mean()
        else:
            loss = F.cross_entropy(logits, y)
        self.backward(loss * self.batch_scale(y), ctx)
        return loss.detach(), logits.detach()

    def batch_scale(self, y: torch.Tensor) -> torch.Tensor | float:
        """1 for the batch mean; for the sum, the global batch size (the batch summed over
        the processes: each averages its shard's gradient by its share, ``distributed``)."""
        if self.reduction == "mean":
            return 1.0
        return self.reduce_sum(torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)).item()

    @torch.no_grad()
    def infer(self, net: nn.Module, x: torch.Tensor) -> Inference:
        """Logits y = W_out O_L / (V_th T) + b_out (through the readout's pooling neurons
        with ``pool_v_th``) and spikes per sample of each neuron site (pooling neurons'
        spikes are not counted)."""
        program, inputs, ctx = self.setup(net, x)
        flow = self.forward_flow(program, ctx, inputs)
        scale = self.neuron.v_th * self.T
        readout = Pass(program, ctx, Bias(scale))
        readout.set_input(flow.o_in, float(self.T))
        for stage in self._stages(program):
            readout.set(stage.index, flow.counts[stage.index])
        counts = [per_sample(flow.counts[site.index]) for site in program.sites]
        return Inference(readout.take(program.output) / scale, counts)


def _estimated(gain: AdaptiveGain, x_acc: torch.Tensor, o_count: torch.Tensor, update_k: bool,
               total: Total = _local) -> torch.Tensor:
    """O in forward, k 1[X > 0] dX in backward (k refitted first when ``update_k``; the
    fit's sums taken over the processes by ``total``)."""
    x_acc = state_precision(x_acc)
    x_value = x_acc.detach()
    if update_k:
        gain.update(x_value, o_count, total)
    gain.record_fit(x_value, o_count, total)
    return replace_grad(o_count, gain.gain(x_value) * x_acc)
