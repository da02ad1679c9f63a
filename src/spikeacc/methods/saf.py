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
from torch.autograd.function import once_differentiable

from .. import compiling, kernels
from ..graph import Bias, CallContext, Pass, Program, Site
from ..neurons import accumulation_weight
from ..neurons.lif import LIF
from ..neurons.surrogate import derivative, fire, state_precision
from .base import Inference, Inputs, Method, per_sample, replace_grad
from .online import Leaks, OnlineMethod, Sums, accumulate, publish


def saf_fire(u_hat: torch.Tensor, acc_prev: torch.Tensor, reset_factor: float, v_th: float, surrogate: str,
             alpha: float, strict: bool) -> torch.Tensor:
    """s[t] = H(U_hat[t] - rho V_th A[t-1] - V_th) (the neuron's surrogate in backward)."""
    return fire(u_hat - reset_factor * v_th * acc_prev, v_th, surrogate, alpha, strict)  # u[t] = U_hat - rho V_th A


def reset_factor(neuron: LIF) -> float:
    """rho in u[t] = g U_hat[t] - rho V_th A[t-1]: lam for the subtraction before the leak, 1
    for the late subtraction (after the leak), 0 without a reset (``rules`` refuses the rest)."""
    return {"subtract": neuron.lam, "subtract_late": 1.0, "none": 0.0}[neuron.reset]


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


def fused_step(program: Program, ctx: CallContext, leaks: Leaks, site: Site, step_pass: Pass, previous: Sums
               ) -> tuple[Sums, torch.Tensor] | None:
    """``saf_step``'s neuron update of one site without a graph in one kernel call, C or
    Triton (the same sums and spikes bit for bit): its sums A[t] per leak and its spikes
    s[t], or None where the kernel does not take its current (a static input's unit value that is not float32 or
    float64 in C, float32 in Triton). A current of input-only ops is c[t] (W x + b), read
    from the unit value."""
    lam = leaks.site[site.index]
    kernel = SiteKernel.of(site, leaks, 1, False)
    if site.input in program.input_only and step_pass.input_scale is not None:
        current, scale = ctx.unit_value(program, site.input), step_pass.input_scale
        if not kernels.saf_fused(current):
            return None
    else:
        current, scale = state_precision(step_pass.take(site.input)), 1.0
    previous_sums = [previous[(site.index, leak)] for leak in kernel.leaks] if (site.index, lam) in previous else None
    spike = torch.empty_like(current)
    site_sums = kernels.saf_steps(current, [scale], kernel.leaks, kernel.own, kernel.gain, kernel.reset,
                                  kernel.v_th, kernel.strict, previous_sums, spikes=spike)
    return dict(zip(((site.index, leak) for leak in kernel.leaks), site_sums)), spike


@torch.no_grad()
def accumulated_trajectory(program: Program, ctx: CallContext, leaks: Leaks, inputs: Inputs,
                           steps: int, compiled: bool = False, count: bool = True
                           ) -> tuple[Sums, list[torch.Tensor] | None]:
    """Run SAF without a graph for ``steps`` steps, so that memory does not grow with T: the
    sums after the last step, and (with ``count``) spikes per sample of each site ([B]).
    These are the LIF network's spikes, so Spike Representation uses this too. The sites
    ``whole_sites`` names run all their steps in one kernel call, C or Triton
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
    """``saf_step`` ``steps`` times over ``sites`` (which read no other site): the sums after
    the last step (of the sites and the input), and spikes per sample of each of the
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


def whole_sites(program: Program, ctx: CallContext) -> list[Site]:
    """The sites whose trajectory is one element-wise recurrence over one tensor: under a
    static input (once per call) every value before such a site is computed once, so
    U_hat[t] = c[t] (W x + b) (W x + b: ``ctx.unit_value``); no other site reads its spikes;
    and its current is a tensor a kernel takes (``kernels.saf_fused``: C or Triton)."""
    if ctx.static_input is None:
        return []
    read = set().union(*(program.sources_of[site.input] for site in program.sites))
    return [site for site in program.sites if site.input in program.input_only and site.index not in read
            and kernels.saf_fused(ctx.unit_value(program, site.input))]


def reads_raw_input(program: Program) -> bool:
    """Does a value other than the once-per-call input-only ones read the input itself?"""
    return any(program.input in node.data_args for node in program.nodes
               if node.index not in program.input_only and node.index != program.input)


def scaled_input_sums(ctx: CallContext, leaks: Leaks, steps: int) -> Sums:
    """The input's sums after ``steps`` steps, c[steps] x per leak, where nothing reads them
    but as the carrier of the scale of the input-only values (``Pass.set_input``)."""
    x = ctx.static_input
    return {(leaks.input, lam): accumulation_weight(lam, steps) * x for lam in leaks.of_source[leaks.input]}


@dataclass(frozen=True)
class SiteKernel:
    """What the kernels (``kernels.saf_steps``) need of one site's neurons for
    ``steps`` steps from rest (``fused_step``: one step, its scale given there)."""

    steps: int
    scales: list[float]  # c[t], t = 1..steps
    leaks: list[float]  # the leaks its sums are kept with
    own: int  # the index of its own leak in ``leaks``
    gain: float  # g (1 - lam with decay_input, else 1)
    reset: float  # rho V_th
    v_th: float
    strict: bool
    surrogate: str
    alpha: float
    sr_surrogate: bool

    @classmethod
    def of(cls, site: Site, leaks: Leaks, steps: int, sr_surrogate: bool) -> "SiteKernel":
        lam, neuron = leaks.site[site.index], site.module
        site_leaks = sorted(leaks.of_source[site.index])
        return cls(steps, [accumulation_weight(lam, t + 1) for t in range(steps)], site_leaks, site_leaks.index(lam),
                   1.0 - lam if neuron.decay_input else 1.0, reset_factor(neuron) * neuron.v_th, neuron.v_th,
                   neuron.strict, neuron.surrogate, neuron.alpha, sr_surrogate)

    def run(self, unit: torch.Tensor, counts: torch.Tensor | None = None, last: torch.Tensor | None = None
            ) -> list[torch.Tensor]:
        """The sums after all steps, one per leak, each [B, ...] (``kernels.saf_steps``)."""
        return kernels.saf_steps(unit, self.scales, self.leaks, self.own, self.gain, self.reset, self.v_th,
                                     self.strict, counts=counts, last=last)


class _FusedSite(torch.autograd.Function):
    """A whole site's steps in one kernel call, the last one differentiable as ``saf_step``'s:
    with x = g c[T] u - rho V_th A[T-1] the last fire value (the kernel returns it) and
    dL/ds = sum_j dL/dA_j[T] (A_j[T] = lam_j A_j[T-1] + s[T]),

        dL/du = c[T] g sigma'(x - V_th) dL/ds,   or with the SR surrogate
        dL/du = c[T] g 1[0 <= g c[T] u <= c[T] V_th] dL/ds."""

    @staticmethod
    def forward(ctx, unit: torch.Tensor, site: SiteKernel) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        last = torch.empty_like(unit)  # [B, ...]
        sums = site.run(unit, last=last)
        ctx.save_for_backward(unit, last)
        ctx.site = site
        return tuple(sums)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grad_sums: torch.Tensor):  # type: ignore[override]
        unit, last = ctx.saved_tensors
        site, c_T = ctx.site, ctx.site.scales[-1]
        grad_spike = sum(grad_sums[1:], grad_sums[0])
        if not site.sr_surrogate and kernels.native(last):
            return kernels.cpu.saf_last_backward(last, grad_spike, site.v_th, site.surrogate, site.alpha, site.gain,
                                                 c_T), None
        if site.sr_surrogate:
            u_hat = c_T * unit if site.gain == 1.0 else site.gain * (c_T * unit)
            grad = grad_spike * ((u_hat >= 0.0) & (u_hat <= c_T * site.v_th))
        else:
            grad = derivative(site.surrogate, last - site.v_th, site.alpha).mul_(grad_spike)
        return (grad if site.gain == 1.0 else grad * site.gain) * c_T, None


def fused_trajectory(program: Program, ctx: CallContext, leaks: Leaks, site: Site, steps: int, count: bool = False,
                     sr_surrogate: bool = False) -> tuple[Sums, torch.Tensor | None]:
    """``steps`` SAF steps of one of ``whole_sites`` in one kernel call: its sums after the last
    step for each of its leaks (the last step differentiable where a gradient is wanted:
    ``_FusedSite``), and with ``count`` its spikes per sample ([B])."""
    unit = ctx.unit_value(program, site.input)  # W x + b, [B, ...]
    whole = SiteKernel.of(site, leaks, steps, sr_surrogate)
    counts = torch.zeros_like(unit) if count else None
    if torch.is_grad_enabled() and unit.requires_grad:
        site_sums = _FusedSite.apply(unit, whole)
    else:
        site_sums = whole.run(unit, counts)
    sums = dict(zip(((site.index, leak) for leak in whole.leaks), site_sums))
    return sums, None if counts is None else per_sample(counts)


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
        previous, _ = step_by_step(program, ctx, leaks, inputs, T - 1, rest, self.compile, count=False)
        sums, _ = saf_step(program, ctx, leaks, inputs.at(T - 1), T - 1, previous, self.sr_surrogate, self.compile,
                           rest)
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
