"""SAF's neuron steps in kernels (``spikeacc.kernels``: C on CPU tensors, Triton on CUDA
float32 ones), the same sums and spikes bit for bit as ``saf.saf_step`` in a loop
(tests/test_saf_fused.py).

Under a static input (once per call, ``CallContext.static_input``) every value before a
site that only the input feeds is computed once, W x + b (``ctx.unit_value``), so that
site's trajectory is one element-wise recurrence over one tensor (saf.py's equations):

    U_hat[t] = c[t] (W x + b),   s[t] = H(g U_hat[t] - rho V_th A[t-1] - V_th),
    A[t] = lam A[t-1] + s[t]

Such a site that no other site reads (``whole_sites``) runs all its steps in one call
(``fused_trajectory``; SAF-F's last step differentiable through ``_FusedSite``); every
other site runs each step's neuron update in one call (``fused_step``, from ``saf_step``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

from .. import kernels
from ..graph import CallContext, Pass, Program, Site
from ..neurons import accumulation_weight
from ..neurons.lif import LIF
from ..neurons.surrogate import derivative, state_precision
from .base import per_sample
from .online import Leaks, Sums


def reset_factor(neuron: LIF) -> float:
    """rho in u[t] = g U_hat[t] - rho V_th A[t-1]: lam for the subtraction before the leak, 1
    for the late subtraction (after the leak), 0 without a reset (``rules`` refuses the rest)."""
    return {"subtract": neuron.lam, "subtract_late": 1.0, "none": 0.0}[neuron.reset]


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
        return cls([accumulation_weight(lam, t + 1) for t in range(steps)], site_leaks, site_leaks.index(lam),
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
        last = torch.empty_like(unit, memory_format=torch.contiguous_format)  # [B, ...]
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
    """``steps`` SAF steps of one of ``whole_sites`` in one kernel call: its sums after the
    last step for each of its leaks (the last step differentiable where a gradient is
    wanted: ``_FusedSite``), and with ``count`` its spikes per sample ([B])."""
    unit = ctx.unit_value(program, site.input)  # W x + b, [B, ...]
    whole = SiteKernel.of(site, leaks, steps, sr_surrogate)
    counts = torch.zeros_like(unit, memory_format=torch.contiguous_format) if count else None
    if torch.is_grad_enabled() and unit.requires_grad:
        site_sums = _FusedSite.apply(unit, whole)
    else:
        site_sums = whole.run(unit, counts)
    sums = dict(zip(((site.index, leak) for leak in whole.leaks), site_sums))
    return sums, None if counts is None else per_sample(counts)


def fused_step(program: Program, ctx: CallContext, leaks: Leaks, site: Site, step_pass: Pass, previous: Sums
               ) -> tuple[Sums, torch.Tensor] | None:
    """``saf_step``'s neuron update of one site without a graph in one kernel call, C or
    Triton (the same sums and spikes bit for bit): its sums A[t] per leak and its spikes
    s[t], or None where no kernel takes a static input's unit value (C: float32, float64;
    Triton: float32). A current of input-only ops is c[t] (W x + b), read from the unit
    value."""
    lam = leaks.site[site.index]
    kernel = SiteKernel.of(site, leaks, 1, False)
    if site.input in program.input_only and step_pass.input_scale is not None:
        current, scale = ctx.unit_value(program, site.input), step_pass.input_scale
        if not kernels.saf_fused(current):
            return None
    else:
        current, scale = state_precision(step_pass.take(site.input)), 1.0
    previous_sums = [previous[(site.index, leak)] for leak in kernel.leaks] if (site.index, lam) in previous else None
    spike = torch.empty_like(current, memory_format=torch.contiguous_format)
    site_sums = kernels.saf_steps(current, [scale], kernel.leaks, kernel.own, kernel.gain, kernel.reset,
                                  kernel.v_th, kernel.strict, previous_sums, spikes=spike)
    return dict(zip(((site.index, leak) for leak in kernel.leaks), site_sums)), spike
