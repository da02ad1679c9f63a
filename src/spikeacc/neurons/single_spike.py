"""Single-spike LIF neuron computed for all T steps at once (Taylor, King & Harper 2022,
"Accelerating spiking neural network training"; methods.md "Accelerated single-spike").

Each neuron fires at most once, so its reset never influences its own output and the
membrane can be computed without reset for the whole window (paper Eq. 1-2, v2 notation):

    V[t] = sum_{k<=t} beta^(t-k) I[k],        beta = exp(-1/tau)            (membrane)
    S~[t] = H(V[t] - threshold)                                            (faulty spikes)
    z[t] = sum_{k<=t} sum_{j<=k} S~[j]  (= cumsum(cumsum(S~)))             (Eq. 3)
    S[t] = 1[z[t] == 1]                                                     (first crossing)

Time is dim 0 everywhere: currents and spikes are [T, B, ...] (any trailing neuron shape:
[T, B, N] after a Linear, [T, B, C, H, W] after a Conv2d). H(x) is 1 for x >= 0, so a
membrane exactly at threshold fires (the authors' code uses x > 0; ties are measure zero
in training and the repository's Heaviside is x >= 0).

Gradient semantics (the paper's v2 code, ``block``):
  * dS~/dV is the fast sigmoid 1 / (scale |V - threshold| + 1)^2
    (``spikeacc.neurons.surrogate``, "fast_sigmoid" with alpha = scale);
  * the step z -> S passes the gradient straight through, dS/dz := 1, so the gradient
    reaches S~ through the double cumsum: dL/dS~[j] = sum_{t>=j} (t - j + 1) dL/dS[t];
  * dV/dI and dV/dbeta are exact.
``sequential_single_spike`` is the loop reference with exactly these semantics: the
at-most-once rule (a neuron that has fired stays silent) gives the values, and the
running sums c[t] = c[t-1] + S~[t], z[t] = z[t-1] + c[t] carry the straight-through
gradient. The vectorised and sequential forms therefore agree in spikes, membrane and
gradients (tests/test_single_spike.py, float64).

The membrane is a causal convolution with kernel beta^j. Three exact forms are
implemented: "matmul" (a [T, T] lower-triangular decay matrix times [T, B*N]), "conv"
(``conv1d`` with a length-T kernel) and "chunked" (the matmul form on chunks of about
sqrt(T) steps plus the same recurrence across chunks, O(T^1.5) instead of O(T^2)).
All three are vectorised over time. ``form="auto"`` picks by T and decay (``auto_form``),
from the CPU measurement of ``benchmarks/single_spike.py`` (results/single_spike.md,
"Membrane forms"): conv1d with a length-T kernel is 5-40x slower than matmul at every T on
CPU, so it is never chosen; with one decay shared by all neurons matmul wins up to T = 64,
the two are even at T = 128, and chunked is 2-4x faster than matmul from T = 256 to 2048.
With a decay per neuron (``trainable_decay``) both become a batched product of M [T, T]
matrices, and on CPU the sequential "loop" form is faster at every T measured, so "auto"
takes it there; on CUDA, where a loop costs a launch per step, the products stay.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn
import torch.nn.functional as F

from .. import kernels
from .. import compiling
from .surrogate import check_surrogate, derivative, fire, state_precision

MEMBRANE_FORMS = ("auto", "matmul", "conv", "chunked", "loop")
# "auto" uses the matmul form up to this T and the chunked form above it, with a shared
# decay (measured on CPU, benchmarks/results/single_spike.md, "Membrane forms").
AUTO_MATMUL_MAX_T = 64
# Above AUTO_MATMUL_MAX_T steps, ``single_spike_lif`` runs groups of samples of about
# this many elements each: the chunked membrane and the cumsums then stay in cache.
# On the 2-core CPU of benchmarks/results: [128, 32, 1000] 54 -> 30 ms, [128, 256, 100]
# 55 -> 29 ms, [512, 64, 100] 35 -> 27 ms (forward + backward); groups hurt with the
# matmul forms (T <= 64, [16, 128, 1000]: 8 ms whole, 11-43 ms in groups).
GROUP_ELEMENTS = 2 ** 19


def decay_from_tau(tau: float) -> float:
    """beta = exp(-1/tau), the per-step membrane decay of the single-spike neuron."""
    if not tau > 0:
        raise ValueError(f"time constant tau must be > 0, got {tau}")
    return math.exp(-1.0 / tau)


def flat_decay(beta: torch.Tensor, neuron_shape: torch.Size) -> torch.Tensor:
    """beta broadcast to the neuron shape, flattened: [1] (shared) or [M]."""
    if beta.numel() == 1:
        return beta.reshape(1)
    try:
        return beta.expand(neuron_shape).reshape(-1)
    except RuntimeError:
        raise ValueError(f"decay of shape {tuple(beta.shape)} does not broadcast to the "
                         f"neuron shape {tuple(neuron_shape)}") from None


def decay_powers(beta: torch.Tensor, T: int) -> torch.Tensor:
    """beta^j for j = 0..T-1: [M, T] for beta [M]. Differentiable, finite at beta = 0."""
    exponents = torch.arange(1, T, dtype=beta.dtype, device=beta.device)  # [T-1]
    ones = torch.ones_like(beta).unsqueeze(-1)  # [M, 1]
    return torch.cat([ones, beta.unsqueeze(-1) ** exponents], dim=-1)  # [M, T]


def decay_matrix(beta: torch.Tensor, T: int) -> torch.Tensor:
    """Lower-triangular D[m, t, k] = beta_m^(t-k) for k <= t, else 0: [M, T, T]."""
    steps = torch.arange(T, device=beta.device)
    lag = steps.view(-1, 1) - steps.view(1, -1)  # [T, T], t - k
    powers = decay_powers(beta, T)  # [M, T]
    return powers[:, lag.clamp(min=0)] * (lag >= 0).to(powers.dtype)


def apply_decay_matrix(decay: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """decay [1 or M, T, T] (``decay_matrix``) times current [T, B, M] over time: [T, B, M]."""
    T, B, M = current.shape
    if decay.shape[0] == 1:
        return (decay[0] @ current.reshape(T, B * M)).reshape(T, B, M)
    return torch.bmm(decay, current.permute(2, 0, 1)).permute(1, 2, 0)  # via [M, T, B]


def _integrate_matmul(current: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """current [T, B, M], beta [1] or [M] -> membrane [T, B, M] by one (batched) product."""
    return apply_decay_matrix(decay_matrix(beta, current.shape[0]), current)


def _integrate_conv(current: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """current [T, B, M] -> membrane [T, B, M] by a causal conv1d with kernel beta^j."""
    T, B, M = current.shape
    kernel = decay_powers(beta, T).flip(-1).unsqueeze(1)  # [1 or M, 1, T]: beta^(T-1-j)
    groups = kernel.shape[0]
    series = current.permute(1, 2, 0).reshape(-1, groups, T)  # [B*M/groups, groups, T]
    v_mem = F.conv1d(F.pad(series, (T - 1, 0)), kernel, groups=groups)
    return v_mem.reshape(B, M, T).permute(2, 0, 1)


def chunk_length(T: int) -> int:
    """Chunk length of the "chunked" form: the power of two nearest sqrt(T), at least 8."""
    return max(8, 1 << round(math.log2(T) / 2))


def _integrate_chunked(current: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Two-level matmul form, O(T (C + T / C^2)) per series instead of O(T^2).

    Split time into n chunks of C steps. Inside chunk c the membrane from rest is
    L[c, j] = sum_{i<=j} beta^(j-i) I[cC + i] (one [C, C] product for all chunks); the
    membrane at the end of chunk c is P[c] = sum_{c'<=c} (beta^C)^(c-c') L[c', C-1] (the
    same recurrence with decay beta^C over chunks), and V[cC + j] = L[c, j] + beta^(j+1) P[c-1].
    """
    T, B, M = current.shape
    C = chunk_length(T)
    n = -(-T // C)
    padded = F.pad(current, (0, 0, 0, 0, 0, n * C - T))  # [n*C, B, M], zeros after T
    chunks = padded.reshape(n, C, B, M).transpose(0, 1).reshape(C, n * B, M)
    local = _integrate_matmul(chunks, beta).reshape(C, n, B, M)  # L[j, c]
    ends = _integrate_matmul(local[-1], beta ** C)  # P[c] [n, B, M]
    carry = F.pad(ends[:-1], (0, 0, 0, 0, 1, 0))  # P[c-1], zero for the first chunk
    rise = decay_powers(beta, C + 1)[:, 1:].t().reshape(C, 1, 1, -1)  # beta^(j+1) [C, 1, 1, 1 or M]
    v_mem = local + rise * carry.unsqueeze(0)  # [C, n, B, M]
    return v_mem.transpose(0, 1).reshape(n * C, B, M)[:T]


def _integrate_loop(current: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The sequential reference: v[t] = beta v[t-1] + I[t], one step at a time."""
    v_mem, v_mems = torch.zeros_like(current[0]), []
    for current_t in current:
        v_mem = beta * v_mem + current_t
        v_mems.append(v_mem)
    return torch.stack(v_mems)


_FORMS = {"matmul": _integrate_matmul, "conv": _integrate_conv, "chunked": _integrate_chunked,
          "loop": _integrate_loop}


def leaky_integrate(current: torch.Tensor, beta: torch.Tensor | float, form: str = "auto") -> torch.Tensor:
    """Membrane without reset V[t] = sum_{k<=t} beta^(t-k) I[k] for all t at once.

    current [T, B, ...]; beta a float, a 0-d/1-element tensor (shared) or a tensor
    broadcastable to the neuron shape current.shape[2:] (per neuron). Returns [T, B, ...].
    ``form``: "matmul", "conv", "chunked", "auto" (``auto_form``) or "loop" (the
    sequential reference, a Python loop over t).
    """
    if form not in MEMBRANE_FORMS:
        raise ValueError(f"unknown membrane form {form!r}; choose one of {', '.join(MEMBRANE_FORMS)}")
    if current.dim() < 2:
        raise ValueError(f"current must be [T, B, ...], got shape {tuple(current.shape)}")
    beta = torch.as_tensor(beta, dtype=current.dtype, device=current.device)
    beta = flat_decay(beta, current.shape[2:])  # [1] or [M]
    T, B = current.shape[:2]
    flat = current.reshape(T, B, -1)  # [T, B, M]
    return _FORMS[resolved_form(form, T, beta, current.device)](flat, beta).reshape(current.shape)


def auto_form(T: int, per_neuron: bool = False, device: torch.device | str = "cpu") -> str:
    """The faster exact form for T steps (benchmarks/results/single_spike.md, "Membrane
    forms", measured on CPU): the loop with a decay per neuron on CPU, else matmul up to
    ``AUTO_MATMUL_MAX_T`` steps and chunked above."""
    if per_neuron and torch.device(device).type == "cpu":
        return "loop"
    return "matmul" if T <= AUTO_MATMUL_MAX_T else "chunked"


def resolved_form(form: str, T: int, beta: torch.Tensor | float, device: torch.device) -> str:
    """``form``, with "auto" resolved by ``auto_form`` for T steps and this decay (per neuron
    where it holds more than one value)."""
    if form != "auto":
        return form
    return auto_form(T, torch.is_tensor(beta) and beta.numel() > 1, device)


def double_cumsum(x: torch.Tensor, transpose: bool = False) -> torch.Tensor:
    """z[t] = sum_{k<=t} (t - k + 1) x[k] over dim 0 (= cumsum(cumsum(x))), or with
    ``transpose`` its adjoint sum_{t>=k} (t - k + 1) x[t]. x [T, ...] -> [T, ...].

    Up to ``AUTO_MATMUL_MAX_T`` steps one product with the [T, T] matrix
    Phi[t, k] = (t - k + 1) 1[k <= t]; above, two cumsums (fewer operations).
    """
    T = x.shape[0]
    if T > AUTO_MATMUL_MAX_T:
        if transpose:
            return x.flip(0).cumsum(0).cumsum(0).flip(0)
        return x.cumsum(0).cumsum(0)
    phi = _phi(T, x.dtype, x.device)
    return ((phi.t() if transpose else phi) @ x.reshape(T, -1)).reshape(x.shape)


@functools.lru_cache(maxsize=32)
def _phi(T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Phi[t, k] = (t - k + 1) 1[k <= t]: [T, T] (cached, never modified)."""
    steps = torch.arange(T, device=device)
    lag = steps.view(-1, 1) - steps.view(1, -1)  # [T, T], t - k
    return ((lag + 1) * (lag >= 0)).to(dtype)


class _FirstSpike(torch.autograd.Function):
    """S = 1[z == 1], z = double_cumsum(H(V - threshold)); backward: dS/dz := 1
    (straight through), dz/dS~ = Phi, dS~/dV = fast sigmoid (module docstring).

    z[t] = 1 exactly at the first t with S~[t] = 1 (before it z = 0, after it z >= 2),
    so the forward finds that step without forming z: the largest of (T - t) over the
    steps with S~[t] = 1 is T - (first crossing). One ``where`` and one max over time;
    on this repository's 2-core CPU (one thread) it took 5.4 ms where the cumsum rule took
    28 ms at [T, B, N] = [16, 128, 1000], and 1.2-1.5x less than an argmax over dim 0
    at [128, 32, 100] to [512, 32, 100].
    """

    @staticmethod
    def forward(ctx, v_mem: torch.Tensor, threshold: float, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(v_mem)
        ctx.threshold, ctx.scale = threshold, scale
        T = v_mem.shape[0]
        countdown = torch.arange(T, 0, -1, dtype=torch.int32, device=v_mem.device)  # T - t
        countdown = countdown.view(T, *[1] * (v_mem.dim() - 1))
        latest = torch.where(v_mem >= threshold, countdown, 0).amax(0, keepdim=True)  # [1, B, ...]
        first = (T - latest).clamp_(max=T - 1).long()  # first crossing; T - 1 if none
        return torch.zeros_like(v_mem).scatter_(0, first, (latest > 0).to(v_mem.dtype))

    @staticmethod
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        (v_mem,) = ctx.saved_tensors
        grad_faulty = double_cumsum(grad_spikes, transpose=True)  # fresh tensor
        surrogate = derivative("fast_sigmoid", v_mem - ctx.threshold, ctx.scale)
        return grad_faulty.mul_(surrogate), None, None


def first_spike(v_mem: torch.Tensor, threshold: float, scale: float) -> torch.Tensor:
    """S = 1[cumsum(cumsum(H(V - threshold))) == 1] over dim 0, straight-through z -> S
    (Eq. 3 of the paper). v_mem [T, B, ...] -> spikes [T, B, ...] (at most one 1 per
    neuron and sample). A fused Triton kernel (``spikeacc.kernels.first_spike``) where
    ``spikeacc.kernels.wanted`` says so (CUDA float32/float16/bfloat16 tensors when triton
    imports), else ``_FirstSpike``."""
    if kernels.wanted(v_mem):
        from ..kernels.first_spike import fused_first_spike  # imports triton: only once a kernel runs
        return fused_first_spike(v_mem, threshold, scale)
    return _FirstSpike.apply(v_mem, float(threshold), float(scale))


def single_spike_lif(current: torch.Tensor, beta: torch.Tensor | float, threshold: float, scale: float,
                     form: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The vectorised single-spike neuron: current [T, B, ...] -> (spikes, membrane
    without reset), both [T, B, ...]. Above ``AUTO_MATMUL_MAX_T`` steps, the product forms
    run samples in groups of about ``GROUP_ELEMENTS`` elements (same values and gradients;
    faster on CPU)."""
    T, B = current.shape[:2]
    form = resolved_form(form, T, beta, current.device)
    grouped = T > AUTO_MATMUL_MAX_T and form != "loop"
    group = max(1, GROUP_ELEMENTS // max(1, current[:, 0].numel())) if grouped else B
    if group >= B:
        v_mem = leaky_integrate(current, beta, form)
        return first_spike(v_mem, threshold, scale), v_mem
    parts = [single_spike_lif(part, beta, threshold, scale, form) for part in current.split(group, dim=1)]
    return torch.cat([spikes for spikes, _ in parts], dim=1), torch.cat([v for _, v in parts], dim=1)


class Decaying(nn.Module):
    """A per-step decay beta = exp(-1/tau), shared ([1]) or, trainable, one per element of
    ``shape`` (clamped to [0, 1] when read, as in the authors' code)."""

    def __init__(self, tau: float, shape: tuple[int, ...], trainable: bool) -> None:
        super().__init__()
        beta = torch.full(shape if trainable else (1,), decay_from_tau(tau))
        if trainable:
            self.beta_raw = nn.Parameter(beta)
        else:
            self.register_buffer("beta_raw", beta)

    @property
    def beta(self) -> torch.Tensor:
        """Per-step decay in [0, 1]: [1] shared, or per element."""
        return self.beta_raw.clamp(0.0, 1.0)


class SingleSpikeLIF(Decaying):
    """Single-spike LIF layer for [T, B, ...] currents, vectorised over time.

    Args:
        tau: membrane time constant; beta = exp(-1/tau).
        threshold: firing threshold (> 0).
        scale: fast-sigmoid surrogate sharpness (10 as in the paper's v2; v1 used 100).
        trainable_decay: learn beta per neuron (clamped to [0, 1] as in the authors' code).
        neuron_shape: shape of one sample's neurons ([N] or [C, H, W]); needed with
            ``trainable_decay`` to size the per-neuron beta.
        form: membrane computation, "auto", "matmul", "conv", "chunked" or "loop" (``leaky_integrate``).
    """

    def __init__(self, tau: float = 10.0, threshold: float = 1.0, scale: float = 10.0,
                 trainable_decay: bool = False, neuron_shape: tuple[int, ...] = (),
                 form: str = "auto") -> None:
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold}")
        check_surrogate("fast_sigmoid", scale)
        if form not in MEMBRANE_FORMS:
            raise ValueError(f"unknown membrane form {form!r}; choose one of {', '.join(MEMBRANE_FORMS)}")
        if trainable_decay and not neuron_shape:
            raise ValueError("trainable_decay needs neuron_shape (one beta per neuron)")
        super().__init__(tau, tuple(neuron_shape), trainable_decay)
        self.threshold, self.scale, self.form = float(threshold), float(scale), form

    def forward(self, current: torch.Tensor, compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """current [T, B, ...] -> (spikes [T, B, ...], membrane without reset [T, B, ...])
        (``compiled``: under torch.compile)."""
        current = state_precision(current)
        layer = compiling.maybe(single_spike_lif, compiled)
        return layer(current, self.beta.to(current.dtype), self.threshold, self.scale, self.form)

    def reference(self, current: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same layer by the sequential loop (``sequential_single_spike``)."""
        current = state_precision(current)
        return sequential_single_spike(current, self.beta.to(current.dtype), self.threshold, self.scale)


def sequential_single_spike(current: torch.Tensor, beta: torch.Tensor | float, threshold: float,
                            scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: a loop over t with the at-most-once rule, same gradient semantics.

    v[t] = beta v[t-1] + I[t]; a neuron fires at t if v[t] >= threshold and it has not
    fired before (no reset needed: after its spike it is silent). The spike's value comes
    from that rule; its gradient is passed straight through to the running double sum
    z[t] = z[t-1] + c[t], c[t] = c[t-1] + S~[t] (module docstring).
    Returns (spikes [T, B, ...], membrane [T, B, ...]).
    """
    beta = torch.as_tensor(beta, dtype=current.dtype, device=current.device)
    if beta.numel() == 1:
        beta = beta.reshape(())
    v_mem = torch.zeros_like(current[0])
    count, z, fired = torch.zeros_like(v_mem), torch.zeros_like(v_mem), torch.zeros_like(v_mem)
    spikes, v_mems = [], []
    for current_t in current:
        v_mem = beta * v_mem + current_t
        faulty = fire(v_mem, threshold, "fast_sigmoid", scale)
        count = count + faulty
        z = z + count
        spike_t = faulty.detach() * (1.0 - fired)  # at most once
        fired = torch.maximum(fired, spike_t)
        spikes.append(z + (spike_t - z).detach())
        v_mems.append(v_mem)
    return torch.stack(spikes), torch.stack(v_mems)


READOUTS = ("max", "sum")


def readout_logits(current: torch.Tensor, beta: torch.Tensor | float, reduce: str = "max",
                   form: str = "auto") -> torch.Tensor:
    """Non-spiking readout: leaky membrane of current [T, B, K] (tau_readout = 20 in the
    paper), reduced over time by "max" (v1) or "sum" (v2) into logits [B, K]."""
    if reduce not in READOUTS:
        raise ValueError(f"unknown readout {reduce!r}; choose one of {', '.join(READOUTS)}")
    v_mem = leaky_integrate(current, beta, form)  # [T, B, K]
    return v_mem.amax(0) if reduce == "max" else v_mem.sum(0)


class LeakyReadout(Decaying):
    """The non-spiking readout as a module: decay beta = exp(-1/tau), shared, or with
    ``trainable_decay`` one per output (clamped to [0, 1], as the authors' v2 code trains
    it); ``forward(current [T, B, K]) -> logits [B, K]`` (``readout_logits``)."""

    def __init__(self, tau: float = 20.0, reduce: str = "sum", trainable_decay: bool = False,
                 n_outputs: int = 0, form: str = "auto") -> None:
        if reduce not in READOUTS:
            raise ValueError(f"unknown readout {reduce!r}; choose one of {', '.join(READOUTS)}")
        if trainable_decay and n_outputs <= 0:
            raise ValueError("a trainable readout decay needs n_outputs (one beta per output)")
        super().__init__(tau, (n_outputs,), trainable_decay)
        self.reduce, self.form = reduce, form

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        current = state_precision(current)
        return readout_logits(current, self.beta.to(current.dtype), self.reduce, self.form)
