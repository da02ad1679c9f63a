"""Spike accumulation forwarding, SAF (Saiin et al., TMLR 2024; methods.md "SAF").

Layers forward the accumulated spike A[t] = lam * A[t-1] + s[t] instead of s[t].
Unrolling the LIF neuron gives, exactly (the paper's Eqs. for U-hat and s in Sec. 4),
for a neuron with leak lam and input ops I = L(sources) + b:

    U_hat[t] = L(A_sources[t]) + c[t] b,   c[t] = sum_{k<t} lam^k
    s[t] = H(U_hat[t] - lam * V_th * A[t-1] - V_th),   A[t] = lam * A[t-1] + s[t]

The other settings of the LIF family it runs (``methods.rules``): the late subtraction
(snnTorch's: rho = 1 in s[t] = H(g U_hat[t] - rho V_th A[t-1] - V_th), lam V_th above being
rho = lam), no reset (rho = 0), input decay (g = 1 - lam, else 1), no leak (lam = 1, c[t] = t)
and firing on >.

where A_sources are the sources' sums with this neuron's leak (``online.Leaks``), so one
product per op and step carries both the value and the weight gradient (OTTT needs the
ops on s[t] and on a_hat[t]). The spikes are those of the LIF network, so SAF-trained
weights run unchanged in ``spiking_inference``.

* SAF-E: L = (1/T) sum_t CE(o[t], y), o[t] = R[t] - lam R[t-1] with R[t] the readout's
  ops on its sources' sums (lambda_out), constant terms scaled by c[t] in value and by
  1 in gradient; A[t-1] and R[t-1] are detached, and the gradient equals OTTT's (the
  paper's Theorem 1).
* SAF-F: L = CE(R[T] / c[T], y), the weighted-rate readout; steps 1..T-1 run without a
  graph, and one backward follows step T. With the surrogate taken as the Spike
  Representation derivative (``surrogate="sr"``) its gradient is SR's when the neurons
  share one leak and V_th = 1 (the paper's Theorem 2); with V_th != 1 each neuron's
  gradient carries a factor V_th per neuron between it and the readout.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import compiling, kernels
from ..graph import Bias, CallContext, Pass, Program, Site
from ..neurons import accumulation_weight
from ..neurons.surrogate import fire, state_precision
from .base import Inference, Inputs, Method, per_sample, replace_grad
from .online import Leaks, OnlineMethod, Sums, accumulate, publish
from .saf_fused import fused_step, fused_trajectory, reads_raw_input, reset_factor, scaled_input_sums, whole_sites


def saf_fire(u_hat: torch.Tensor, acc_prev: torch.Tensor, reset_factor: float, v_th: float, surrogate: str,
             alpha: float, strict: bool) -> torch.Tensor:
    """s[t] = H(U_hat[t] - rho V_th A[t-1] - V_th) (the neuron's surrogate in backward)."""
    return fire(u_hat - reset_factor * v_th * acc_prev, v_th, surrogate, alpha, strict)  # u[t] = U_hat - rho V_th A


def saf_step(program: Program, ctx: CallContext, leaks: Leaks, x_t: torch.Tensor, t: int,
             previous: Sums, sr_surrogate: bool = False, compiled: bool = False,
             sites: list[Site] | None = None) -> tuple[Sums, list[torch.Tensor]]:
    """One SAF step (t 0-based) through every site (or only ``sites``, which read none of the
    others): the sums A[t] per (source, leak) and each site's spikes s[t]. ``previous``:
    A[t-1] (constants; empty before step 0). With ``sr_surrogate`` a spike's derivative is
    SR's, ds/dU_hat := 1[0 < U_hat / c[t] < V_th]; ``compiled``: the neuron update under
    torch.compile. A neuron with ``decay_input`` takes g U_hat (g = 1 - lam), one with the
    late subtraction rho = 1 (``reset_factor``)."""
    passes = {lam: Pass(program, ctx, Bias(accumulation_weight(lam, t + 1))) for lam in leaks.hidden}
    sums: Sums = {}

    def emit(source: int, value: torch.Tensor) -> None:
        accumulate(previous, source, value, leaks, sums)
        publish(sums, source, leaks, passes, None, lambda lam: accumulation_weight(lam, t + 1))

    emit(program.input, x_t)
    native = not torch.is_grad_enabled() and not compiled and kernels.saf_fused(x_t)
    spikes = []
    for site in program.sites if sites is None else sites:
        lam, neuron = leaks.site[site.index], site.module
        fused = fused_step(program, ctx, leaks, site, passes[lam], previous) if native else None
        if fused is not None:
            sums.update(fused[0])
            publish(sums, site.index, leaks, passes, None)
            spikes.append(fused[1])
            continue
        u_hat = state_precision(passes[lam].take(site.input))  # L(A_sources[t]) + c[t] b
        if neuron.decay_input:
            u_hat = (1.0 - lam) * u_hat
        acc_prev, rho = previous.get((site.index, lam)), reset_factor(neuron)
        if acc_prev is None or rho == 0.0:
            spike_t = neuron.fire(u_hat)
        else:
            spike_t = compiling.maybe(saf_fire, compiled)(u_hat, acc_prev, rho, neuron.v_th, neuron.surrogate,
                                                          neuron.alpha, neuron.strict)
        if sr_surrogate:
            spike_t = replace_grad(spike_t, torch.clamp(u_hat, 0.0, accumulation_weight(lam, t + 1) * neuron.v_th))
        emit(site.index, spike_t)
        spikes.append(spike_t)
    return sums, spikes


@torch.no_grad()
def accumulated_trajectory(program: Program, ctx: CallContext, leaks: Leaks, inputs: Inputs,
                           steps: int, compiled: bool = False, count: bool = True
                           ) -> tuple[Sums, list[torch.Tensor] | None]:
    """Run SAF without a graph for ``steps`` steps, so that memory does not grow with T: the
    sums after the last step, and (with ``count``) spikes per sample of each site ([B]).
    These are the LIF network's spikes, so Spike Representation uses this too. The sites
    ``saf_fused.whole_sites`` names run all their steps in one kernel call, C or Triton
    (``fused_trajectory``), the others one step at a time (``step_by_step``), the same
    sums bit for bit."""
    whole = [] if compiled or not steps else whole_sites(program, ctx)
    sums, counts = step_by_step(program, ctx, leaks, inputs, steps, [s for s in program.sites if s not in whole],
                                compiled, count)
    for site in whole:
        site_sums, site_counts = fused_trajectory(program, ctx, leaks, site, steps, count)
        sums.update(site_sums)
        if counts is not None:
            counts[program.sites.index(site)] = site_counts
    return sums, counts


@torch.no_grad()
def step_by_step(program: Program, ctx: CallContext, leaks: Leaks, inputs: Inputs, steps: int, sites: list[Site],
                 compiled: bool = False, count: bool = True) -> tuple[Sums, list | None]:
    """``saf_step`` ``steps`` times over ``sites`` (which read none of the others): the sums
    after the last step (of the sites and the input), and spikes per sample of each of the
    program's sites (0 for the others), with ``count``. Without sites, where nothing reads
    the input's sums themselves, no step runs (``scaled_input_sums``)."""
    counts: list | None = [0.0] * len(program.sites) if count else None
    if not sites and not reads_raw_input(program):
        return scaled_input_sums(ctx, leaks, steps), counts
    sums: Sums = {}
    for t in range(steps):
        sums, spikes = saf_step(program, ctx, leaks, inputs.at(t), t, sums, compiled=compiled, sites=sites)
        if counts is not None:
            for site, spike in zip(sites, spikes):
                counts[program.sites.index(site)] += per_sample(spike)
    return sums, counts


def readout_pass(program: Program, ctx: CallContext, leaks: Leaks, sums: Sums, bias: Bias,
                 input_scale: float) -> Pass:
    """A pass for the readout: its sources' sums with lambda_out (the input's is
    ``input_scale`` times a static input)."""
    readout = Pass(program, ctx, bias)
    for source in program.sources_of[program.output]:
        if source == program.input:
            readout.set_input(sums[(source, leaks.readout)], input_scale)
        else:
            readout.set(source, sums[(source, leaks.readout)])
    return readout


def weighted_readout(program: Program, ctx: CallContext, leaks: Leaks, sums: Sums, T: int) -> torch.Tensor:
    """R[T] / c[T]: the readout of the weighted firing rate, [B, K]."""
    c_T = accumulation_weight(leaks.readout, T)
    return readout_pass(program, ctx, leaks, sums, Bias(c_T), c_T).take(program.output) / c_T


@dataclass
class SAFEState:
    leaks: Leaks
    sums: Sums = field(default_factory=dict)  # A[t-1] per (source, leak)
    readout_prev: torch.Tensor | None = None  # R[t-1]


class SAFE(OnlineMethod):
    """SAF-E: a loss at every step, gradient equal to OTTT-A's."""

    name = "saf-e"
    neuron_rule = "saf"

    def start(self, program: Program) -> SAFEState:
        return SAFEState(Leaks(program, own=True))

    def forward_step(self, program: Program, ctx: CallContext, inputs: Inputs, t: int, state: SAFEState):
        leaks = state.leaks
        sums, spikes = saf_step(program, ctx, leaks, inputs.at(t), t, state.sums, compiled=self.compile)
        c_t = accumulation_weight(leaks.readout, t + 1)
        r_t = readout_pass(program, ctx, leaks, sums, Bias(c_t, grad=1.0), c_t).take(program.output)  # R[t]
        out = r_t if state.readout_prev is None else r_t - leaks.readout * state.readout_prev
        state.sums = {key: value.detach() for key, value in sums.items()}
        state.readout_prev = r_t.detach()
        return out, [s.detach() for s in spikes]

    def infer(self, net: nn.Module, x: torch.Tensor) -> Inference:
        return self.online_inference(net, x)


class SAFF(Method):
    """SAF-F: loss on the final accumulated output; T no-graph steps, one backward.

    ``surrogate``: "neuron" uses each LIF's surrogate at u[T] - V_th; "sr" uses the
    Spike Representation derivative 1[0 < I_avg < V_th] (Theorem 2's setting).
    """

    name = "saf-f"
    neuron_rule = "saf"
    one_backward = True

    def __init__(self, T: int, surrogate: str = "neuron") -> None:
        super().__init__(T)
        if surrogate not in ("neuron", "sr"):
            raise ValueError(f"SAF-F surrogate must be 'neuron' or 'sr', got {surrogate!r}")
        self.sr_surrogate = surrogate == "sr"

    def loss_and_grad(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        program, inputs, ctx = self.setup(net, x, y)
        leaks, T = Leaks(program, own=True), self.T
        whole = [] if self.compile else whole_sites(program, ctx)
        rest = [site for site in program.sites if site not in whole]
        if rest or reads_raw_input(program):
            previous, _ = step_by_step(program, ctx, leaks, inputs, T - 1, rest, self.compile, count=False)
            sums, _ = saf_step(program, ctx, leaks, inputs.at(T - 1), T - 1, previous, self.sr_surrogate,
                               self.compile, rest)
        else:  # every site in one call each: no step at all (``step_by_step``)
            sums = scaled_input_sums(ctx, leaks, T)
        for site in whole:  # all T steps, the last with a graph
            sums.update(fused_trajectory(program, ctx, leaks, site, T, sr_surrogate=self.sr_surrogate)[0])
        logits = weighted_readout(program, ctx, leaks, sums, T)
        loss = F.cross_entropy(logits, y)
        self.backward(loss, ctx)
        return loss.detach(), logits.detach()

    def infer(self, net: nn.Module, x: torch.Tensor) -> Inference:
        program, inputs, ctx = self.setup(net, x)
        leaks = Leaks(program, own=True)
        with torch.no_grad():
            sums, counts = accumulated_trajectory(program, ctx, leaks, inputs, self.T, self.compile)
            logits = weighted_readout(program, ctx, leaks, sums, self.T)
        return Inference(logits, counts)
