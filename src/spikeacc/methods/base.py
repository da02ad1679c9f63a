"""What every training method shares: input layout, the Method interface, and the
spiking inference path (the real LIF network every LIF-based method deploys to)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models import SpikingNet


@dataclass
class Inference:
    """Output of a no-grad run: logits [B, K] and per-layer spike counts, each [B]."""

    logits: torch.Tensor
    spike_counts: list[torch.Tensor]


class Inputs:
    """An input batch seen as T steps: static x [B, ...] fed every step, or a sequence [T, B, ...]."""

    def __init__(self, x: torch.Tensor, T: int, net: SpikingNet) -> None:
        sample = net.sample_shape
        static = x.dim() >= 2 and _same_size(x.shape[1:], sample)
        sequence = x.dim() >= 3 and x.shape[0] == T and _same_size(x.shape[2:], sample)
        if static and sequence:  # [T, 1, ...]: an exact sample-shape match decides, else static
            sequence = tuple(x.shape[2:]) == sample and tuple(x.shape[1:]) != sample
            static = not sequence
        if not (static or sequence):
            raise ValueError(
                f"input shape {tuple(x.shape)} fits neither [B, *{sample}] nor [T={T}, B, *{sample}]")
        self.static, self.batch = static, x.shape[0] if static else x.shape[1]
        self.x, self.T = x, T

    def at(self, t: int) -> torch.Tensor:
        """Input at step t (0-based): [B, ...]."""
        return self.x if self.static else self.x[t]

    def sequence(self) -> torch.Tensor:
        """All steps [T, B, ...] (a broadcast view for static input, no copy)."""
        return self.x.expand(self.T, *self.x.shape) if self.static else self.x


class Method:
    """A way to compute the loss gradient of a SpikingNet over T time steps.

    Subclasses implement ``loss_and_grad`` (accumulates into ``.grad``) and ``infer``.
    """

    name: str = ""

    def __init__(self, T: int) -> None:
        if int(T) != T or T <= 0:
            raise ValueError(f"T (time steps) must be a positive integer, got {T}")
        self.T = int(T)

    def loss_and_grad(self, net: SpikingNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss (detached scalar) and logits [B, K]; adds the gradient to every parameter's .grad."""
        raise NotImplementedError

    def infer(self, net: SpikingNet, x: torch.Tensor) -> Inference:
        raise NotImplementedError

    def predict(self, net: SpikingNet, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, K] without a graph."""
        return self.infer(net, x).logits

    def step(self, net: SpikingNet, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on the batch."""
        optimizer.zero_grad(set_to_none=True)
        loss, logits = self.loss_and_grad(net, x, y)
        optimizer.step()
        return loss, logits

    def inputs(self, net: SpikingNet, x: torch.Tensor, y: torch.Tensor | None = None) -> Inputs:
        inputs = Inputs(x, self.T, net)
        if y is not None and (y.dim() != 1 or y.shape[0] != inputs.batch):
            raise ValueError(f"labels shape {tuple(y.shape)} does not match batch size {inputs.batch}")
        return inputs


def _same_size(shape: torch.Size, sample_shape: tuple[int, ...]) -> bool:
    return math.prod(shape) == math.prod(sample_shape)


def over_time(module: torch.nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Apply a per-sample module to every step of h [S, B, ...] as one batch of S*B samples."""
    out = module(h.reshape(-1, *h.shape[2:]))  # [S*B, ...]
    return out.reshape(h.shape[0], -1, *out.shape[1:])  # [S, B, ...]


def per_sample(values: torch.Tensor) -> torch.Tensor:
    """Sum over everything but the batch dim: [B, ...] -> [B] (e.g. spikes per sample)."""
    return values.flatten(1).sum(1)


def lif_forward(net: SpikingNet, inputs: Inputs) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The real LIF network, layer by layer over all T steps (one product per layer
    for the whole window): spikes of every hidden layer [T, B, ...] and readout
    membrane per step o[t] = W_out s_L[t] + b, [T, B, K]. Differentiable (BPTT)."""
    h = inputs.sequence()  # [T, B, ...]
    spikes = []
    for synapse in net.hidden:
        h = net.neuron.run(over_time(synapse, h))  # [T, B, ...]
        spikes.append(h)
    return spikes, over_time(net.readout, h)  # [T, B, K]


def readout_logits(per_step: torch.Tensor, readout: str, lam: float) -> torch.Tensor:
    """Combine o[t] [T, B, K] into logits: "mean" over t, or "weighted" by lam^(T-t)
    (the weighted firing-rate readout of SR and SAF-F)."""
    if readout == "mean":
        return per_step.mean(0)
    T = per_step.shape[0]
    weights = per_step.new_tensor([lam ** (T - 1 - t) for t in range(T)])
    return torch.einsum("t,tbk->bk", weights, per_step) / weights.sum()


@torch.no_grad()
def spiking_inference(net: SpikingNet, x: torch.Tensor, T: int, readout: str = "mean") -> Inference:
    """Run the weights as a real LIF spiking network (what neuromorphic hardware runs)."""
    inputs = Inputs(x, T, net)
    spikes, per_step = lif_forward(net, inputs)
    return Inference(readout_logits(per_step, readout, net.neuron.lam), spike_counts(spikes))


def spike_counts(spikes: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per layer, spikes per sample: each [T, B, ...] -> [B]."""
    return [per_sample(s.sum(0)) for s in spikes]


def per_step_ce(per_step: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L = (1/T) sum_t CE(o[t], y) for o [T, B, K]."""
    T = per_step.shape[0]
    return F.cross_entropy(per_step.reshape(-1, per_step.shape[-1]), y.repeat(T))


def replace_grad(value: torch.Tensor, grad_path: torch.Tensor) -> torch.Tensor:
    """``value`` in forward, gradient through ``grad_path`` in backward."""
    return grad_path + (value - grad_path).detach()


class OnlineMethod(Method):
    """Methods that backpropagate each step's loss L[t] = CE(o[t], y) / T at once, with
    every temporal dependency cut: memory is constant in T. Subclasses give one step.

    ``update_every_step``: call ``optimizer.step()`` after every time step (OTTT-O)
    instead of once per batch.
    """

    update_every_step = False

    def forward_step(self, net: SpikingNet, inputs: Inputs, t: int, state: list | None
                     ) -> tuple[torch.Tensor, list, list[torch.Tensor]]:
        """Step t (0-based): (o[t] [B, K] with graph, next state (detached), hidden spikes)."""
        raise NotImplementedError

    def _run(self, net: SpikingNet, x: torch.Tensor, y: torch.Tensor,
             optimizer: torch.optim.Optimizer | None) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, state = self.inputs(net, x, y), None
        loss, logits = 0.0, 0.0  # become tensors on the input device at t = 0
        for t in range(self.T):
            out, state, _ = self.forward_step(net, inputs, t, state)
            loss_t = F.cross_entropy(out, y) / self.T
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            loss_t.backward()
            if optimizer is not None:
                optimizer.step()
            loss = loss + loss_t.detach()
            logits = logits + out.detach() / self.T
        return loss, logits

    def loss_and_grad(self, net: SpikingNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._run(net, x, y, None)

    def step(self, net: SpikingNet, optimizer: torch.optim.Optimizer, x: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.update_every_step:
            return super().step(net, optimizer, x, y)
        return self._run(net, x, y, optimizer)

    @torch.no_grad()
    def online_inference(self, net: SpikingNet, x: torch.Tensor) -> Inference:
        """Run this method's own forward: logits = mean_t o[t], spikes counted per layer."""
        inputs, state = self.inputs(net, x), None
        logits, counts = 0.0, None
        for t in range(self.T):
            out, state, spikes = self.forward_step(net, inputs, t, state)
            logits = logits + out / self.T
            step_counts = [per_sample(s) for s in spikes]
            counts = step_counts if counts is None else [c + s for c, s in zip(counts, step_counts)]
        return Inference(logits, counts)
