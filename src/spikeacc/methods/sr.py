"""Spike Representation / DSR (Meng et al., CVPR 2022; methods.md "Spike Representation").

The weighted firing rate a_l = A_l[T] / c[T] = sum_t lam^(T-t) s_l[t] / sum_t lam^(T-t)
approximates clamp(I_avg / V_th, 0, 1) of the weighted-average input current
I_avg = W_l a_{l-1} + b_l. Forward runs the real LIF network without a graph; backward
differentiates that clamp mapping instead of the spikes, one ANN-like pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models import SpikingNet
from ..neurons import accumulation_weight
from .base import Inference, Method, replace_grad
from .saf import accumulated_trajectory


class SpikeRepresentation(Method):
    name = "sr"

    def loss_and_grad(self, net: SpikingNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, v_th = self.inputs(net, x, y), net.neuron.v_th
        finals, _ = accumulated_trajectory(net, inputs, self.T)  # A_l[T], no graph
        c_T = accumulation_weight(net.neuron.lam, self.T)
        rate = finals[0] / c_T  # weighted input rate a_0 [B, ...]
        for synapse, acc in zip(net.hidden, finals[1:]):
            i_avg = synapse(rate)  # W a_{l-1} + b
            rate = replace_grad(acc / c_T, torch.clamp(i_avg, 0.0, v_th) / v_th)
        logits = net.readout(rate)  # [B, K]
        loss = F.cross_entropy(logits, y)
        loss.backward()
        return loss.detach(), logits.detach()

    def infer(self, net: SpikingNet, x: torch.Tensor) -> Inference:
        with torch.no_grad():
            finals, counts = accumulated_trajectory(net, self.inputs(net, x), self.T)
            rate = finals[-1] / accumulation_weight(net.neuron.lam, self.T)
            return Inference(net.readout(rate), counts)
