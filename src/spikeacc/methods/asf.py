"""ASF-BP: backpropagation on the accumulated spiking flow (Wu et al., AAAI 2021;
methods.md "ASF-BP"; authors' code neural-lab/ASF-BP).

Forward (no graph): integrate-and-fire neurons with hard reset (neurons/if_neuron.py)
run for T steps, layer by layer. Per hidden layer l the method keeps the accumulated
input and output of the whole window,

    X_l = sum_t (W_l s_{l-1}[t] + b_l) = W_l O_{l-1} + T b_l,    O_l = sum_t s_l[t],

with O_0 = sum_t x[t] (the accumulated input). The synapse is linear, so X_l is formed
once from the counts instead of being summed step by step (the two differ by float
rounding only); a bias is a constant current added every step, hence T b_l. Parameter-
free pre-ops of a synapse (AvgPool2d, Flatten) are linear too: a pool + conv synapse
has X_l = W_l pool(O_{l-1}) + T b_l, i.e. average pooling of spikes pools the spike
counts and its backward is the pooling's adjoint (the default).

Spiking average pooling as in the authors' code (option ``pool_v_th``, 0.75 there): IF
neurons with threshold ``pool_v_th`` follow every AvgPool2d pre-op that pools spikes (all
synapses but the first, the readout included); that pooling stage has P = pool(O_{l-1}),
its own counts O_p and its own k, fitted over all elements (the authors' code fits
pooling stages without the X >= O mask), and X_l = W_l O_p + T b_l.

Adaptive linear estimation (the paper's "equivalent network"): O_l ~ k_l X_l where
X_l > 0, with k_l fitted on the batch over the elements with X >= O,

    k_hat = sum O / sum X,   k <- 0.6 k_hat + 0.4 k,   k = 1 initially,

re-estimated every ``k_every`` training steps (one k per layer, or per channel).

Backward: ONE autograd pass over the accumulated values. Each hidden layer's output is
``replace_grad(O_l, k_l 1[X_l > 0] X_l)``: the forward value is the true count and
the gradient is

    delta_{l-1} = W_l^T (delta_l * k_l 1[X_l > 0]),   dL/dW_l = (delta_l * k_l 1[X_l > 0]) O_{l-1}^T,

so backward time and memory do not depend on T. The readout is non-spiking,
y = W_out O_L / (V_th T) + b_out, trained with MSE to the one-hot label (the paper's
loss; per-sample squared error summed over classes, averaged over the batch, where the
authors' code also sums over the batch, a mere rescaling) or with cross-entropy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..models import SpikingNet, Synapse
from ..neurons.if_neuron import IF
from .base import Inference, Inputs, Method, over_time, per_sample, replace_grad

LOSSES = ("mse", "ce")


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

    def estimate(self, x_acc: torch.Tensor, o_count: torch.Tensor) -> torch.Tensor:
        """k_hat = sum O / sum X over elements with X >= O (all elements unless ``masked``);
        1 where sum X < 1e-3 (as the authors' code), x_acc, o_count [B, ...]."""
        if self.per_channel and x_acc.dim() < 2:
            raise ValueError(f"per-channel k needs [B, C, ...] values, got shape {tuple(x_acc.shape)}")
        inside = (x_acc >= o_count).to(x_acc.dtype) if self.masked else torch.ones_like(x_acc)
        num, den = self._reduce(o_count * inside), self._reduce(x_acc * inside)
        return torch.where(den < 1e-3, torch.ones_like(den), num / den.clamp_min(1e-3))

    def update(self, x_acc: torch.Tensor, o_count: torch.Tensor) -> None:
        """k <- smoothing * k_hat + (1 - smoothing) * k (k starts at 1)."""
        self.k_hat = self.estimate(x_acc, o_count)
        k_prev = torch.ones_like(self.k_hat) if self.k is None else self.k
        self.k = self.smoothing * self.k_hat + (1.0 - self.smoothing) * k_prev
        self.updates += 1

    def gain(self, x_acc: torch.Tensor) -> torch.Tensor:
        """dO/dX := k 1[X > 0], shaped like x_acc."""
        k = x_acc.new_ones(()) if self.k is None else self.k.to(x_acc.dtype)
        return self._expand(k, x_acc) * (x_acc > 0).to(x_acc.dtype)

    def record_fit(self, x_acc: torch.Tensor, o_count: torch.Tensor) -> None:
        """fit_error of the k in use on this batch (class docstring)."""
        active = x_acc > 0
        k_x = self.gain(x_acc) * x_acc
        residual = torch.linalg.vector_norm((o_count - k_x)[active])
        self.fit_error = float(residual / torch.linalg.vector_norm(o_count[active]).clamp_min(1.0))

    def stats(self, layer: str) -> dict:
        k = 1.0 if self.k is None else self.k.tolist()
        k_hat = None if self.k_hat is None else self.k_hat.tolist()
        return {"layer": layer, "k": k, "k_hat": k_hat, "fit_error": self.fit_error, "updates": self.updates}


@dataclass
class Flow:
    """Accumulated values of one forward window, each [B, ...]: O_0 = sum_t x[t], the
    spike counts O_l of the hidden layers, and per synapse of [*hidden, readout] the
    counts of its pooling neurons (None where it has none)."""

    o_in: torch.Tensor
    counts: list[torch.Tensor]
    pool_counts: list[torch.Tensor | None]


def pooling_sites(net: SpikingNet, pool_neuron: IF | None) -> list[bool]:
    """Per synapse of [*hidden, readout]: are IF neurons placed after its AvgPool2d pre-op?
    Only where the pooled values are spikes (not the first synapse)."""
    synapses = [*net.hidden, net.readout]
    if pool_neuron is None:
        return [False] * len(synapses)
    return [i > 0 and any(isinstance(m, nn.AvgPool2d) for m in s.pre) for i, s in enumerate(synapses)]


@torch.no_grad()
def accumulated_flow(net: SpikingNet, inputs: Inputs, neuron: IF, chunk: int | None = None,
                     pool_neuron: IF | None = None) -> Flow:
    """Run the IF network for T steps without a graph and accumulate its Flow.

    Time is processed in windows of ``chunk`` steps (None: all T at once); inside a
    window each layer is one batched product over all its steps, and the membranes
    carry over between windows, so forward memory is O(chunk) instead of O(T).
    ``pool_neuron``: IF neurons after the poolings of spikes (module docstring).
    """
    T, pooled = inputs.T, pooling_sites(net, pool_neuron)
    chunk = T if chunk is None else chunk
    synapses = [*net.hidden, net.readout] if pooled[-1] else list(net.hidden)
    v_mems: list[torch.Tensor | None] = [None] * len(synapses)
    pool_v_mems: list[torch.Tensor | None] = [None] * len(synapses)
    counts: list = [0.0] * len(net.hidden)
    pool_counts: list = [0.0 if site else None for site in pooled]
    o_in: torch.Tensor | float = 0.0
    for start in range(0, T, chunk):
        steps = min(chunk, T - start)
        if inputs.static:  # the same input every step: one product, broadcast over steps
            o_in = o_in + steps * inputs.x
            h = inputs.x.unsqueeze(0)  # [1, B, ...]
        else:
            h = inputs.x[start:start + steps]  # [S, B, ...]
            o_in = o_in + h.sum(0)
        for layer, synapse in enumerate(synapses):
            if pooled[layer]:
                pooled_in = over_time(synapse.pre, h)  # [S, B, ...]
                h, pool_v_mems[layer] = pool_neuron.run(pooled_in, pool_v_mems[layer])
                pool_counts[layer] = pool_counts[layer] + h.sum(0)
                if layer == len(net.hidden):  # the readout's pooling: nothing spikes after it
                    break
                synapse = Synapse(synapse.op)  # the same weights, without the pre-ops
            current = over_time(synapse, h)
            if current.shape[0] != steps:  # static input: one product for every step
                current = current.expand(steps, *current.shape[1:])
            h, v_mems[layer] = neuron.run(current, v_mems[layer])  # [S, B, ...]
            counts[layer] = counts[layer] + h.sum(0)
    return Flow(o_in, counts, pool_counts)


class ASF(Method):
    """ASF-BP on a SpikingNet's weights with its own IF neurons (the net's LIF is unused).

    Options (``methods.get("asf", T, **options)``):
        v_th: IF threshold (paper: 1 for MNIST, 2 for CIFAR-10); leak: IF leak in (0, 1].
        loss: "mse" (to one-hot, the paper's) or "ce".
        per_channel: one k per channel (dim 1 of a layer's output) instead of per layer.
        k_every: re-estimate k every this many training steps (0: keep k = 1).
        chunk: time steps simulated per batched window in the forward (None: all T at
            once; the default 10 bounds forward memory independently of T).
        pool_v_th: threshold of IF neurons after each pooling of spikes (the authors'
            spiking average pooling, 0.75 in their code); None pools counts linearly.
    """

    name = "asf"

    def __init__(self, T: int, v_th: float = 1.0, leak: float = 1.0, loss: str = "mse",
                 per_channel: bool = False, k_every: int = 1, chunk: int | None = 10,
                 pool_v_th: float | None = None) -> None:
        super().__init__(T)
        if loss not in LOSSES:
            raise ValueError(f"ASF loss must be one of {LOSSES}, got {loss!r}")
        if int(k_every) != k_every or k_every < 0:
            raise ValueError(f"ASF k_every must be an integer >= 0, got {k_every}")
        if chunk is not None and (int(chunk) != chunk or chunk <= 0):
            raise ValueError(f"ASF chunk must be a positive integer or None, got {chunk}")
        self.neuron = IF(v_th, leak)
        self.pool_neuron = None if pool_v_th is None else IF(pool_v_th)
        self.loss, self.per_channel = loss, per_channel
        self.k_every, self.chunk = int(k_every), chunk
        self.gains: list[AdaptiveGain] = []  # one per hidden layer
        self.pool_gains: list[AdaptiveGain | None] = []  # one per synapse of [*hidden, readout]
        self.train_steps = 0

    def _prepare(self, net: SpikingNet) -> None:
        if len(self.gains) != len(net.hidden):
            self.gains = [AdaptiveGain(self.per_channel) for _ in net.hidden]
            self.pool_gains = [AdaptiveGain(self.per_channel, masked=False) if site else None
                               for site in pooling_sites(net, self.pool_neuron)]

    def state_dict(self) -> dict:
        """The estimation state (k per layer and pooling stage, step count) for checkpoints."""
        return {"train_steps": self.train_steps, "gains": [asdict(g) for g in self.gains],
                "pool_gains": [asdict(g) if g else None for g in self.pool_gains]}

    def load_state_dict(self, state: dict) -> None:
        self.train_steps = state["train_steps"]
        self.gains = [AdaptiveGain(**g) for g in state["gains"]]
        self.pool_gains = [AdaptiveGain(**g) if g else None for g in state["pool_gains"]]

    def stats(self) -> list[dict]:
        """Per hidden layer ("hidden.i"), then per pooling stage ("pool.i", before synapse i):
        k in use, last k_hat, fit error of O vs kX, number of k updates."""
        hidden = [gain.stats(f"hidden.{i}") for i, gain in enumerate(self.gains)]
        return hidden + [gain.stats(f"pool.{i}") for i, gain in enumerate(self.pool_gains) if gain]

    def forward_flow(self, net: SpikingNet, x: torch.Tensor, y: torch.Tensor | None = None) -> Flow:
        """The no-graph T-step simulation of this method's network."""
        self._prepare(net)
        return accumulated_flow(net, self.inputs(net, x, y), self.neuron, self.chunk, self.pool_neuron)

    def equivalent_network(self, net: SpikingNet, flow: Flow, update_k: bool) -> torch.Tensor:
        """The graph pass on accumulated values: logits [B, K] whose backward is ASF-BP's."""
        h, scale = flow.o_in, self.neuron.v_th * self.T  # O_0 [B, ...]
        for i, synapse in enumerate(net.hidden):
            x_acc = self._synapse(net, i, h, flow, float(self.T), update_k)  # X_l [B, ...]
            h = _estimated(self.gains[i], x_acc, flow.counts[i], update_k)  # O_l, grad k 1[X > 0]
        return self._synapse(net, len(net.hidden), h, flow, scale, update_k) / scale

    def _synapse(self, net: SpikingNet, i: int, h: torch.Tensor, flow: Flow, bias_scale: float,
                 update_k: bool) -> torch.Tensor:
        """Synapse i of [*hidden, readout] on counts h: W pre(h) + bias_scale b, or with a
        spiking pooling stage, W O_p + bias_scale b."""
        synapse = [*net.hidden, net.readout][i]
        if self.pool_gains[i] is None:
            return synapse(h, bias_scale=bias_scale)
        pooled = _estimated(self.pool_gains[i], synapse.pre(h), flow.pool_counts[i], update_k)
        return Synapse(synapse.op)(pooled, bias_scale=bias_scale)

    def loss_and_grad(self, net: SpikingNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flow = self.forward_flow(net, x, y)
        update_k = self.k_every > 0 and self.train_steps % self.k_every == 0
        logits = self.equivalent_network(net, flow, update_k)
        self.train_steps += 1
        if self.loss == "mse":
            target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
            loss = (logits - target).pow(2).sum(1).mean()
        else:
            loss = F.cross_entropy(logits, y)
        loss.backward()
        return loss.detach(), logits.detach()

    @torch.no_grad()
    def infer(self, net: SpikingNet, x: torch.Tensor) -> Inference:
        """Logits y = W_out O_L / (V_th T) + b_out (through the readout's pooling neurons
        with ``pool_v_th``) and spikes per sample of each hidden layer (pooling neurons'
        spikes are not counted)."""
        flow = self.forward_flow(net, x)
        h, scale = (flow.counts[-1] if flow.counts else flow.o_in), self.neuron.v_th * self.T
        readout = net.readout
        if flow.pool_counts[-1] is not None:
            h, readout = flow.pool_counts[-1], Synapse(net.readout.op)
        return Inference(readout(h, bias_scale=scale) / scale, [per_sample(c) for c in flow.counts])


def _estimated(gain: AdaptiveGain, x_acc: torch.Tensor, o_count: torch.Tensor, update_k: bool) -> torch.Tensor:
    """O in forward, k 1[X > 0] dX in backward (k refitted first when ``update_k``)."""
    x_value = x_acc.detach()
    if update_k:
        gain.update(x_value, o_count)
    gain.record_fit(x_value, o_count)
    return replace_grad(o_count, gain.gain(x_value) * x_acc)
