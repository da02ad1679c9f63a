"""Backpropagation through time with surrogate gradients (methods.md, "BPTT").

All T steps are unrolled with a graph and L = (1/T) sum_t CE(o[t], y) is backpropagated
through the whole window: memory and backward cost grow with T. Any op may sit between
neurons; each op runs once on all T steps merged into the batch dim (BatchNorm in
training mode therefore normalises over T*B, as SpikingJelly's multi-step layers do).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import Inference, Method, lif_forward, per_step_ce, spiking_inference


class BPTT(Method):
    """``spike_bits``: a Linear or conv that reads a neuron's spikes keeps them as bits for
    its backward (``graph.spike_products``; 1/32 of their float32 memory); False keeps the
    float spikes, as autograd does (measured 10-20% faster on this project's CPU)."""

    name = "bptt"
    any_op = True

    def __init__(self, T: int, spike_bits: bool = True) -> None:
        super().__init__(T)
        self.spike_bits = bool(spike_bits)

    def loss_and_grad(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        program, inputs, ctx = self.setup(net, x, y)
        per_step = lif_forward(program, inputs, ctx, self.compile, self.spike_bits)[1]  # [T, B, K]; spikes dropped
        loss = per_step_ce(per_step, y)
        self.backward(loss, ctx)
        return loss.detach(), per_step.detach().mean(0)

    def infer(self, net: nn.Module, x: torch.Tensor) -> Inference:
        self.setup(net, x)  # refuses a network BPTT cannot train
        return spiking_inference(net, x, self.T, "mean")
