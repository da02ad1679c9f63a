"""Online training through time, OTTT (Xiao et al., NeurIPS 2022; methods.md "OTTT").

Each neuron's input is computed twice per step: the value path runs the network's ops on
the spikes s[t] (the LIF network), the gradient path on the presynaptic traces
a_hat[t] = lam a_hat[t-1] + s[t] (``online.Leaks``: lam is the reading neuron's leak),
with every constant term scaled by c[t] = sum_{k<t} lam^k, the trace of a constant input.
So dL[t]/dW = delta[t] a_hat[t]^T (OTTT Eq. 8) -- two products per op and step. The
readout has no membrane: its value path is o[t], its gradient path the same ops on the
traces with lambda_out, its constant terms entering o[t] once.

OTTT-A sums the per-step gradients and updates once; OTTT-O updates after every step
(``step``); its ``loss_and_grad`` returns the same per-step sum as OTTT-A. With Adam,
OTTT-O's T steps per batch each move about lr whatever the 1/T scale of the per-step
loss, so lr / T matches the movement per batch of a method that steps once (the
accuracy benchmark does that).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..graph import Bias, CallContext, Pass, Program
from ..neurons import accumulation_weight
from .base import Inference, Inputs, replace_grad, spiking_inference
from .online import Leaks, OnlineMethod, Sums, accumulate, publish


@dataclass
class OTTTState:
    leaks: Leaks
    v_mem: dict[int, torch.Tensor] = field(default_factory=dict)  # per site, V[t-1] (after its reset)
    spike: dict[int, torch.Tensor] = field(default_factory=dict)  # per site, s[t-1]
    traces: Sums = field(default_factory=dict)  # a_hat[t-1] per (source, leak)


class OTTT(OnlineMethod):
    neuron_rule = "ottt"

    def __init__(self, T: int, variant: str = "a") -> None:
        super().__init__(T)
        if variant not in ("a", "o"):
            raise ValueError(f"OTTT variant must be 'a' or 'o', got {variant!r}")
        self.name = f"ottt-{variant}"
        self.update_every_step = variant == "o"

    def start(self, program: Program) -> OTTTState:
        return OTTTState(Leaks(program))

    def forward_step(self, program: Program, ctx: CallContext, inputs: Inputs, t: int, state: OTTTState):
        leaks = state.leaks
        value = Pass(program, ctx)  # the LIF network: spikes
        traces = {lam: Pass(program, ctx, Bias(accumulation_weight(lam, t + 1))) for lam in leaks.hidden}
        readout = Pass(program, ctx)  # the readout's gradient path
        new_traces: Sums = {}

        def emit(source: int, spikes: torch.Tensor) -> None:
            if source == program.input:
                value.set_input(spikes, 1.0)
            else:
                value.set(source, spikes)
            accumulate(state.traces, source, spikes, leaks, new_traces)
            publish(new_traces, source, leaks, traces, readout, lambda lam: accumulation_weight(lam, t + 1))

        emit(program.input, inputs.at(t))
        spikes = []
        for site in program.sites:
            current = replace_grad(value.take(site.input), traces[leaks.site[site.index]].take(site.input))
            if site.index in state.v_mem:
                v_prev, spike_prev = state.v_mem[site.index], state.spike[site.index]
            else:
                v_prev, spike_prev = site.module.rest_state(current)
            v_mem, spike = site.module.step(v_prev, spike_prev, current, self.compile)
            state.v_mem[site.index], state.spike[site.index] = v_mem.detach(), spike.detach()
            emit(site.index, spike)
            spikes.append(spike.detach())
        out = replace_grad(value.take(program.output), readout.take(program.output))  # [B, K]
        state.traces = {key: trace.detach() for key, trace in new_traces.items()}
        return out, spikes

    def infer(self, net: nn.Module, x: torch.Tensor) -> Inference:
        self.setup(net, x)  # refuses a network OTTT cannot train
        return spiking_inference(net, x, self.T, "mean")
