"""Spike Representation / DSR (Meng et al., CVPR 2022; methods.md "Spike Representation").

The weighted firing rate a = A[T] / c[T] = sum_t lam^(T-t) s[t] / sum_t lam^(T-t)
approximates clamp(I_avg / V_th, 0, 1) of the weighted-average input current I_avg (the
neuron's ops applied to its sources' weighted rates, with the neuron's leak). Forward
runs the real LIF network without a graph; backward differentiates that clamp mapping
instead of the spikes, one ANN-like pass.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..graph import IDENTITY, CallContext, Pass, Program
from ..neurons import accumulation_weight
from .base import Inference, Method, replace_grad
from .online import Leaks, Sums, publish
from .saf import accumulated_trajectory, readout_pass


class SpikeRepresentation(Method):
    name = "sr"
    neuron_rule = "sr"
    one_backward = True

    def loss_and_grad(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        program, inputs, ctx = self.setup(net, x, y)
        leaks, T = Leaks(program, own=True), self.T
        sums, _ = accumulated_trajectory(program, ctx, leaks, inputs, T, self.compile, count=False)  # A[T], no graph
        logits = representation_pass(program, ctx, leaks, sums, T)  # [B, K]
        loss = F.cross_entropy(logits, y)
        self.backward(loss, ctx)
        return loss.detach(), logits.detach()

    def infer(self, net: nn.Module, x: torch.Tensor) -> Inference:
        program, inputs, ctx = self.setup(net, x)
        leaks = Leaks(program, own=True)
        with torch.no_grad():
            sums, counts = accumulated_trajectory(program, ctx, leaks, inputs, self.T, self.compile)
            rates = {key: acc / accumulation_weight(key[1], self.T) for key, acc in sums.items()}
            logits = readout_pass(program, ctx, leaks, rates, IDENTITY, 1.0).take(program.output)
        return Inference(logits, counts)


def representation_pass(program: Program, ctx: CallContext, leaks: Leaks, sums: Sums, T: int) -> torch.Tensor:
    """Logits [B, K] of the ANN-like pass on weighted rates, whose backward is SR's."""
    passes = {lam: Pass(program, ctx) for lam in leaks.hidden}  # I_avg = L(rates) + b
    readout = Pass(program, ctx)
    publish(rates_of(sums, program.input, leaks, T), program.input, leaks, passes, readout, lambda lam: 1.0)
    for site in program.sites:
        v_th, lam = site.module.v_th, leaks.site[site.index]
        i_avg = passes[lam].take(site.input)
        if site.module.decay_input:
            i_avg = (1.0 - lam) * i_avg
        slope = torch.clamp(i_avg, 0.0, v_th) / v_th  # the rate as a function of the current
        publish(rates_of(sums, site.index, leaks, T, slope), site.index, leaks, passes, readout)
    return readout.take(program.output)


def rates_of(sums: Sums, source: int, leaks: Leaks, T: int, slope: torch.Tensor | None = None) -> Sums:
    """The weighted rates A[T] / c[T] of one source, per leak; with ``slope``, their
    gradient is taken through ``slope`` instead."""
    rates = {}
    for lam in leaks.of_source[source]:
        rate = sums[(source, lam)] / accumulation_weight(lam, T)
        rates[(source, lam)] = rate if slope is None else replace_grad(rate, slope)
    return rates
