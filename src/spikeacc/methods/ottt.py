"""Online training through time, OTTT (Xiao et al., NeurIPS 2022; methods.md "OTTT").

Each layer carries the presynaptic trace a_hat[t] = lam * a_hat[t-1] + s_in[t]. Per step,
the value path computes W s[t] + b and the gradient path W a_hat[t] + c[t] b, so that
dL[t]/dW = delta[t] a_hat[t]^T (OTTT Eq. 8) -- two products per layer and step. The
bias is treated as a weight on a constant input, whose trace is c[t]; the readout has
no membrane, so its bias enters o[t] once.

OTTT-A sums the per-step gradients and updates once; OTTT-O updates after every step
(``step``); its ``loss_and_grad`` returns the same per-step sum as OTTT-A. With Adam,
OTTT-O's T steps per batch each move about lr whatever the 1/T scale of the per-step
loss, so lr / T matches the movement per batch of a method that steps once (the
accuracy benchmark does that).
"""
from __future__ import annotations

import torch

from ..models import SpikingNet
from ..neurons import accumulation_weight
from .base import Inference, Inputs, OnlineMethod, replace_grad, spiking_inference


class OTTT(OnlineMethod):
    def __init__(self, T: int, variant: str = "a") -> None:
        super().__init__(T)
        if variant not in ("a", "o"):
            raise ValueError(f"OTTT variant must be 'a' or 'o', got {variant!r}")
        self.name = f"ottt-{variant}"
        self.update_every_step = variant == "o"

    def forward_step(self, net: SpikingNet, inputs: Inputs, t: int, state: list | None):
        neuron, lam = net.neuron, net.neuron.lam
        c_t = accumulation_weight(lam, t + 1)
        x_t = inputs.at(t)
        if state is None:  # per layer: (v_mem, spike, trace); first entry is the input trace
            state = [torch.zeros_like(x_t)] + [None] * len(net.hidden)
        trace_in = lam * state[0] + x_t  # [B, ...]
        value, trace, new_state, spikes = x_t, trace_in, [trace_in], []
        for synapse, layer_state in zip(net.hidden, state[1:]):
            current = replace_grad(synapse(value), synapse(trace, bias_scale=c_t))
            if layer_state is None:
                v_mem = spike_prev = trace_prev = torch.zeros_like(current)
            else:
                v_mem, spike_prev, trace_prev = layer_state
            v_mem, value = neuron.step(v_mem, spike_prev, current)
            trace = lam * trace_prev + value
            new_state.append((v_mem.detach(), value.detach(), trace.detach()))
            spikes.append(value.detach())
        out = replace_grad(net.readout(value), net.readout(trace))  # [B, K]
        return out, new_state, spikes

    def infer(self, net: SpikingNet, x: torch.Tensor) -> Inference:
        return spiking_inference(net, x, self.T, "mean")
