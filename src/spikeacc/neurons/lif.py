"""The leaky integrate-and-fire family: spikeacc's LIF and the neurons of SpikingJelly and
snnTorch, each a setting of one module (methods.md "LIF"; ecosystem.md "The peers' neurons").

One step from the membrane after the last reset V[t-1] and the last spike s[t-1]:

    h[t] = lam V[t-1] + (1 - lam) v_rest + g I[t] - V_th d[t]     (charge)
    s[t] = H(h[t] - V_th)          (h[t] > V_th with ``strict``)     (fire)
    V[t] = reset(h[t], s[t])                                        (reset)

with lam = 1 - 1/tau (tau = inf: the IF neuron, lam = 1; or snnTorch's beta), g = 1, or
1 - lam with ``decay_input`` (SpikingJelly's default charge), and per ``reset``:

    "subtract"           V = h - V_th s,  d = 0       spikeacc's default; SpikingJelly v_reset=None
    "subtract_late"      V = h,  d[t] = s[t-1]        snnTorch Leaky's default (reset_delay=True):
                                                      V_th leaves one step late, after the leak
    "subtract_snntorch"  V = h - V_th (s - r),  d = r  snnTorch Leaky(reset_delay=False), with
                         r[t] = H(V[t-1] - V_th): the same spikes as "subtract" until a membrane
                         exceeds 2 V_th, which snnTorch then resets once more before it fires again
    "hard"               V = h (1 - s) + v_reset s     SpikingJelly's default (v_reset=0.), snnTorch "zero"
    "none"               V = h                         snnTorch "none"

v_rest = v_reset for "hard" (SpikingJelly leaks toward V_reset) and 0 otherwise; the
membrane starts at v_rest. ``detach_reset`` cuts the gradient through the reset terms (s in
V and d; r never has one). The default LIF is u[t] = lam (u[t-1] - V_th s[t-1]) + I[t]
(u = h), SpikingJelly's ``LIFNode(tau, decay_input=False, v_reset=None)``.

Learnable and per-neuron values: ``learn_tau`` (SpikingJelly's PLIF: 1/tau = sigmoid(w)),
``beta`` / ``learn_beta`` (snnTorch: lam = clamp(beta, 0, 1), a number or a tensor) and
``learn_v_th`` (snnTorch's learn_threshold). Such neurons run the step-by-step autograd
reference ``neuron_steps``; neurons with fixed numbers run ``lif_window`` (the same spikes
bit for bit, a reverse-time backward): the C kernels on CPU tensors (``kernels.cpu``),
``_Window``'s PyTorch loop otherwise, or, on CUDA with the default settings, the Triton
kernel. Which training method runs which setting: ``spikeacc.methods.rules``.

``LIF`` is an ``nn.Module`` that marks where neurons fire in a user's network and holds
that population's settings; it has no time state. How time is simulated is the training
method's business (``spikeacc.methods``), which reads the network's graph.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .. import compiling, kernels
from .surrogate import check_surrogate, derivative, fire, state_precision

RESETS = ("subtract", "subtract_late", "subtract_snntorch", "hard", "none")
Number = float | torch.Tensor


class Dynamics(NamedTuple):
    """The constants of one step (Python numbers, or tensors for learnable settings)."""

    lam: Number  # membrane leak
    gain: Number  # g, the input's factor
    rest: Number  # (1 - lam) v_rest, added every step
    v_th: Number
    reset: str
    v_reset: float
    strict: bool
    surrogate: str
    alpha: float
    detach_reset: bool

    @property
    def v_init(self) -> float:
        """The membrane at rest, where every neuron starts."""
        return self.v_reset if self.reset == "hard" else 0.0

    @property
    def fixed(self) -> bool:
        """Every value a Python number (the fast paths need that)."""
        return not any(isinstance(v, torch.Tensor) for v in (self.lam, self.gain, self.rest, self.v_th))


class LIF(nn.Module):
    """A population of LIF neurons: its settings (module docstring) and dynamics.

    Args:
        tau: membrane time constant (> 1; ``math.inf``: no leak, the IF neuron); the leak
            is lam = 1 - 1/tau. With ``learn_tau`` the initial value of a learnable tau.
        v_th: firing threshold (> 0), a number or a tensor of per-neuron values.
        surrogate: backward of H: "sigmoid", "atan", "fast_sigmoid" or "rect".
        alpha: surrogate sharpness.
        detach_reset: cut the gradient through the reset (BPTT only; the online
            methods drop all temporal gradients anyway).
        reset: "subtract", "subtract_late", "subtract_snntorch", "hard" or "none".
        v_reset: the membrane after a hard reset (and its resting value).
        decay_input: the input is scaled by 1/tau (SpikingJelly's ``decay_input=True``).
        strict: fire on h > V_th (snnTorch, NIR) instead of h >= V_th (SpikingJelly).
        beta: the leak lam itself (snnTorch's beta, clamped to [0, 1]), instead of tau;
            a number or a tensor of per-neuron values.
        learn_tau: tau is learnable as SpikingJelly's PLIF: parameter ``w``, 1/tau = sigmoid(w).
        learn_beta: beta is a learnable parameter ``beta`` (snnTorch's learn_beta).
        learn_v_th: the threshold is a learnable parameter ``threshold`` (snnTorch's learn_threshold).
    """

    def __init__(self, tau: float = 2.0, v_th: Number = 1.0, surrogate: str = "sigmoid", alpha: float = 4.0,
                 detach_reset: bool = False, *, reset: str = "subtract", v_reset: float = 0.0,
                 decay_input: bool = False, strict: bool = False, beta: Number | None = None,
                 learn_tau: bool = False, learn_beta: bool = False, learn_v_th: bool = False) -> None:
        super().__init__()
        check_surrogate(surrogate, alpha)
        if reset not in RESETS:
            raise ValueError(f"unknown reset {reset!r}; choose one of {', '.join(RESETS)}")
        if reset != "hard" and v_reset != 0.0:
            raise ValueError(f"v_reset is where a hard reset puts the membrane; it needs reset='hard', not {reset!r}")
        self.surrogate, self.alpha, self.detach_reset = surrogate, float(alpha), bool(detach_reset)
        self.reset, self.v_reset = reset, float(v_reset)
        self.decay_input, self.strict = bool(decay_input), bool(strict)
        self._set_leak(tau, beta, learn_tau, learn_beta)
        self._set_threshold(v_th, learn_v_th)
        if self.decay_input and self.leak_kind == "tau" and self._tau == math.inf:
            raise ValueError("decay_input scales the input by 1/tau; an IF neuron (tau = inf) would get none")

    # --- settings ----------------------------------------------------------------------------

    def _set_leak(self, tau: float, beta: Number | None, learn_tau: bool, learn_beta: bool) -> None:
        if beta is not None or learn_beta:
            if learn_tau:
                raise ValueError("LIF takes tau (learn_tau) or beta (learn_beta), not both")
            beta = 1.0 - 1.0 / tau if beta is None else beta
            if isinstance(beta, torch.Tensor) or learn_beta:
                value = torch.as_tensor(beta, dtype=torch.get_default_dtype()).detach().clone()
                if learn_beta:
                    self.beta = nn.Parameter(value)
                else:
                    self.register_buffer("beta", value)
                self.leak_kind = "beta"
                return
            if not 0.0 <= beta <= 1.0:
                raise ValueError(f"LIF beta (the leak) must be in [0, 1], got {beta}")
            self.leak_kind, self._beta = "beta_fixed", float(beta)
            return
        if not tau > 1.0:
            raise ValueError(f"LIF tau must be > 1 (leak 1 - 1/tau in (0, 1]), got {tau}")
        if learn_tau:
            if tau == math.inf:
                raise ValueError("learn_tau needs a finite initial tau")
            self.w = nn.Parameter(torch.tensor(-math.log(tau - 1.0)))  # 1/tau = sigmoid(w)
            self.leak_kind = "plif"
            return
        self.leak_kind, self._tau = "tau", float(tau)

    def _set_threshold(self, v_th: Number, learn_v_th: bool) -> None:
        if isinstance(v_th, torch.Tensor) or learn_v_th:
            value = torch.as_tensor(v_th, dtype=torch.get_default_dtype()).detach().clone()
            if not bool((value > 0).all()):
                raise ValueError("LIF v_th must be > 0")
            if learn_v_th:
                self.threshold = nn.Parameter(value)
            else:
                self.register_buffer("threshold", value)
            self._v_th = None
            return
        if not v_th > 0.0:
            raise ValueError(f"LIF v_th must be > 0, got {v_th}")
        self._v_th = float(v_th)

    @property
    def lam(self) -> Number:
        """Leak factor lambda (1 - 1/tau, or beta)."""
        if self.leak_kind == "tau":
            return 1.0 - 1.0 / self._tau
        if self.leak_kind == "beta_fixed":
            return self._beta
        if self.leak_kind == "plif":
            return 1.0 - torch.sigmoid(self.w)
        return self.beta.clamp(0.0, 1.0)

    @property
    def tau(self) -> Number:
        """Membrane time constant 1 / (1 - lam) (inf for the IF neuron)."""
        if self.leak_kind == "tau":
            return self._tau
        lam = self.lam
        if isinstance(lam, torch.Tensor):
            return 1.0 / (1.0 - lam)
        return math.inf if lam == 1.0 else 1.0 / (1.0 - lam)

    @property
    def v_th(self) -> Number:
        return self.threshold if self._v_th is None else self._v_th

    @property
    def learnable(self) -> list[str]:
        """The names of this neuron's learnable parameters."""
        return [name for name, _ in self.named_parameters(recurse=False)]

    def settings(self) -> dict:
        """The constructor's arguments: ``type(lif)(**lif.settings())`` is an equal neuron
        (learnable values at their current value)."""
        found: dict = {}
        if self.leak_kind in ("tau", "plif"):
            found["tau"] = self._tau if self.leak_kind == "tau" else float(self.tau.detach())
        else:
            found["beta"] = self._beta if self.leak_kind == "beta_fixed" else self.beta.detach().clone()
        found["v_th"] = self._v_th if self._v_th is not None else self.threshold.detach().clone()
        found.update(surrogate=self.surrogate, alpha=self.alpha, detach_reset=self.detach_reset)
        extras = {"reset": (self.reset, "subtract"), "v_reset": (self.v_reset, 0.0),
                  "decay_input": (self.decay_input, False), "strict": (self.strict, False),
                  "learn_tau": (self.leak_kind == "plif", False),
                  "learn_beta": (self.leak_kind == "beta" and isinstance(self.beta, nn.Parameter), False),
                  "learn_v_th": (isinstance(self._parameters.get("threshold"), nn.Parameter), False)}
        found.update({key: value for key, (value, default) in extras.items() if value != default})
        return found

    def extra_repr(self) -> str:
        def shown(value):
            return f"tensor{list(value.shape)}" if isinstance(value, torch.Tensor) and value.dim() else (
                float(value) if isinstance(value, torch.Tensor) else value)
        return ", ".join(f"{key}={shown(value)!r}" for key, value in self.settings().items())

    def dynamics(self) -> Dynamics:
        """This population's step constants (tensors where a value is learnable or per neuron)."""
        lam = self.lam
        gain = (1.0 - lam) if self.decay_input else 1.0
        rest = (1.0 - lam) * self.v_reset if self.reset == "hard" and self.v_reset != 0.0 else 0.0
        return Dynamics(lam, gain, rest, self.v_th, self.reset, self.v_reset, self.strict, self.surrogate,
                        self.alpha, self.detach_reset)

    # --- dynamics ------------------------------------------------------------------------------

    def fire(self, v_mem: torch.Tensor) -> torch.Tensor:
        """s = H(h - V_th) with the surrogate derivative in backward."""
        return fire(v_mem, self.v_th, self.surrogate, self.alpha, self.strict)

    def rest_state(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(V, s) before the first step: the membrane at rest, no spike."""
        return torch.full_like(like, self.dynamics().v_init), torch.zeros_like(like)

    def step(self, v_post: torch.Tensor, spike_prev: torch.Tensor, current: torch.Tensor,
             compiled: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: (V[t], s[t]) from V[t-1], s[t-1], I[t] (``compiled``: under torch.compile)."""
        _, spike, v_post = compiling.maybe(neuron_step, compiled)(v_post, spike_prev, state_precision(current),
                                                                   self.dynamics())
        return v_post, spike

    def run(self, current: torch.Tensor, compiled: bool = False, steps: int | None = None) -> torch.Tensor:
        """All T steps from rest: current [T, B, ...], or [1, B, ...] with ``steps`` = T
        (the same current at every step) -> spikes [T, B, ...].

        The default settings on CUDA float32/float16/bfloat16 take the Triton kernel
        (``spikeacc.kernels.lif``, where ``spikeacc.kernels.wanted`` says so); fixed
        settings take ``lif_window`` (C kernels on the CPU; ``compiled``: ``_Window``'s
        loops under torch.compile); learnable or per-neuron values and "subtract_snntorch"
        take the reference ``neuron_steps``."""
        steps = steps or current.shape[0]
        if current.shape[0] not in (1, steps):
            raise ValueError(f"LIF.run: current has {current.shape[0]} steps, not 1 or {steps}")
        dyn = self.dynamics()
        if is_default(dyn) and kernels.wanted(current):
            from ..kernels.lif import fused_lif  # imports triton: only once a kernel runs
            return fused_lif(current.expand(steps, *current.shape[1:]), dyn.lam, dyn.v_th, dyn.surrogate,
                             dyn.alpha, dyn.detach_reset)
        current = state_precision(current)
        if not windowed(dyn):
            return neuron_steps(current.expand(steps, *current.shape[1:]), dyn)
        return lif_window(current, steps, dyn, compiled=compiled)

    def free_run(self, current: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None,
                 compiled: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Without a graph: current [S, B, ...] -> (spikes [S, B, ...], (V, s) after the last
        step), continuing from ``state`` (None: from rest), which is not modified."""
        if current.dim() < 2:
            raise ValueError(f"LIF.free_run needs current [steps, batch, ...], got shape {tuple(current.shape)}")
        current = state_precision(current)
        v_post, spike = self.rest_state(current[0]) if state is None else (state[0].clone(), state[1])
        return compiling.maybe(free_steps, compiled)(current, v_post, spike, self.dynamics())

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "spikeacc.LIF marks where neurons fire and has no time state; run the network "
            "through a method (spikeacc.methods.get(name, T).predict(net, x)) or "
            "spikeacc.methods.spiking_inference(net, x, T)")


def is_default(dyn: Dynamics) -> bool:
    """spikeacc's own LIF: subtraction before the leak, g = 1, no rest, firing on >=, fixed numbers
    (what the Triton kernel computes)."""
    return dyn.fixed and dyn.reset == "subtract" and dyn.gain == 1.0 and dyn.rest == 0.0 and not dyn.strict


def windowed(dyn: Dynamics) -> bool:
    """Can ``_Window`` run these dynamics (fixed numbers; every reset but snnTorch's recheck)?"""
    return dyn.fixed and dyn.reset != "subtract_snntorch"


# --- the reference: one step, with a graph --------------------------------------------------

def neuron_step(v_post: torch.Tensor, spike_prev: torch.Tensor, current: torch.Tensor, dyn: Dynamics
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step (module docstring): (h[t], s[t], V[t]) from V[t-1], s[t-1] and I[t]."""
    reset_prev = spike_prev.detach() if dyn.detach_reset else spike_prev
    recheck = None
    h = _charge(v_post, current, dyn)
    if dyn.reset == "subtract_late":
        h = h - dyn.v_th * reset_prev
    elif dyn.reset == "subtract_snntorch":
        recheck = fire(v_post.detach(), dyn.v_th, strict=True).detach()  # r[t] = H(V[t-1] - V_th)
        h = h - dyn.v_th * recheck
    spike = fire(h, dyn.v_th, dyn.surrogate, dyn.alpha, dyn.strict)
    reset = spike.detach() if dyn.detach_reset else spike
    if dyn.reset == "subtract":
        v_next = h - dyn.v_th * reset
    elif dyn.reset == "subtract_snntorch":
        v_next = h - dyn.v_th * (reset - recheck)
    elif dyn.reset == "hard":
        v_next = h * (1.0 - reset) + dyn.v_reset * reset
    else:
        v_next = h
    return h, spike, v_next


def _charge(v_post: torch.Tensor, current: torch.Tensor, dyn: Dynamics) -> torch.Tensor:
    """lam V[t-1] + rest + g I[t], each term skipped where it is an exact no-op, so that
    the fast paths' in-place arithmetic (``_charge_into``) rounds the same."""
    h = v_post if _is(dyn.lam, 1.0) else dyn.lam * v_post
    if not _is(dyn.rest, 0.0):
        h = h + dyn.rest
    return h + (current if _is(dyn.gain, 1.0) else dyn.gain * current)


def _is(value: Number, number: float) -> bool:
    return not isinstance(value, torch.Tensor) and value == number


def neuron_steps(current: torch.Tensor, dyn: Dynamics) -> torch.Tensor:
    """All T steps from rest: current [T, B, ...] -> spikes [T, B, ...] (``neuron_step`` in a loop)."""
    v_post = torch.full_like(current[0], dyn.v_init)
    spike = torch.zeros_like(current[0])
    spikes = []
    for current_t in current:
        _, spike, v_post = neuron_step(v_post, spike, current_t, dyn)
        spikes.append(spike)
    return torch.stack(spikes)


@torch.no_grad()
def free_steps(current: torch.Tensor, v_post: torch.Tensor, spike: torch.Tensor, dyn: Dynamics
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """``neuron_steps`` without a graph, from (V, s), over current [S, B, ...]: (spikes, (V, s))."""
    spikes = torch.empty_like(current)
    for t, current_t in enumerate(current):
        _, spike, v_post = neuron_step(v_post, spike, current_t, dyn)
        spikes[t] = spike
    return spikes, (v_post, spike)


# --- the fast path: a window of steps without a graph per step --------------------------------

def _charge_into(v_post: torch.Tensor, spike_prev: torch.Tensor, current_t: torch.Tensor, dyn: Dynamics,
                 out: torch.Tensor) -> torch.Tensor:
    """h[t] into ``out`` (which may be ``v_post``) by the operations of ``neuron_step``,
    in place, so h and the spikes equal the reference's bit for bit."""
    if _is(dyn.lam, 1.0):
        out.copy_(v_post)
    else:
        torch.mul(v_post, dyn.lam, out=out)
    if dyn.rest != 0.0:
        out.add_(dyn.rest)
    out.add_(current_t if dyn.gain == 1.0 else current_t * dyn.gain)
    if dyn.reset == "subtract_late":
        out.sub_(spike_prev, alpha=dyn.v_th)  # V_th s is exact: the same rounding as h - V_th s
    return out


def _fire_into(h: torch.Tensor, dyn: Dynamics, out: torch.Tensor) -> torch.Tensor:
    return (torch.gt if dyn.strict else torch.ge)(h, dyn.v_th, out=out)


def _reset_into(h: torch.Tensor, spike: torch.Tensor, dyn: Dynamics, out: torch.Tensor) -> torch.Tensor:
    """V[t] into ``out``; for s in {0, 1} each form is exactly the reference's value."""
    if dyn.reset == "subtract":
        return torch.sub(h, spike, alpha=dyn.v_th, out=out)
    out.copy_(h)
    if dyn.reset == "hard":
        out.masked_fill_(spike.bool(), dyn.v_reset)
    return out


class _Window(torch.autograd.Function):
    """``neuron_steps`` for fixed settings without a graph per step: the forward loop runs
    in place and the backward is one reverse-time loop. With gh[t] = dL/dh[t], gh[T] = 0,
    gV = lam gh[t+1] = dL/dV[t] and g_s[t] the gradient arriving at s[t]:

        dL/ds[t] = g_s[t] + gV dV/ds - V_th gh[t+1] ["subtract_late"]   (reset terms: 0 with detach_reset)
        gh[t]    = dL/ds[t] sigma'(h[t] - V_th) + gV dV/dh,    dL/dI[t] = g gh[t]

    where dV/ds = -V_th ("subtract"), v_reset - h ("hard"), 0 otherwise, and dV/dh = 1 - s
    ("hard"), 1 otherwise.

    A current [T, B, ...] saves every membrane h[t]. A one-step current [1, B, ...] (a
    static input's products, the same at every step) gets sum_t dL/dI[t], and from T = 8 on
    (where it saves memory) it saves h only at the end of every segment of ~sqrt(T) steps
    and recomputes a segment's h (and spikes) from there, bit for bit, when the backward
    reaches it. Nothing [T, B, ...] is saved then: the spikes are freed once the next
    layer's backward has read them.

    ``compiled``: the whole forward (``window_forward``, every h saved) and the whole
    backward (``window_backward``) each run as one torch.compile'd function, which fuses
    all T steps' element-wise work."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, steps: int, dyn: Dynamics, save: bool,  # type: ignore[override]
                compiled: bool) -> torch.Tensor:
        ctx.dyn, ctx.steps = dyn, steps
        ctx.shared, ctx.compiled = current.shape[0] == 1, compiled
        if compiled:
            spikes, v_mems = compiling.compiled(window_forward)(current, steps, dyn)
            ctx.every = 1
            if save:
                ctx.save_for_backward(v_mems, None)
            return spikes
        every = math.isqrt(steps - 1) + 1 if ctx.shared and steps >= 8 else 1  # steps per saved h
        shape = (steps, *current.shape[1:])
        spikes = current.new_empty(shape)  # [T, B, ...]
        h_saved = current.new_empty((steps // every if save else 0, *shape[1:]))  # h[every k - 1]
        v_post = torch.full_like(spikes[0], dyn.v_init)
        h, spike_prev = torch.empty_like(v_post), torch.zeros_like(v_post)
        for t in range(steps):
            _charge_into(v_post, spike_prev, _at(current, t), dyn, out=h)
            spike_prev = _fire_into(h, dyn, out=spikes[t])
            _reset_into(h, spike_prev, dyn, out=v_post)
            if save and (t + 1) % every == 0:
                h_saved[t // every].copy_(h)
        if save:
            ctx.save_for_backward(h_saved, current if every > 1 else None)
        ctx.every = every
        return spikes

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        h_saved, current = ctx.saved_tensors
        dyn, steps, every = ctx.dyn, ctx.steps, ctx.every
        if ctx.compiled:
            grad_current = compiling.compiled(window_backward)(grad_spikes, h_saved, dyn, ctx.shared)
            return grad_current, None, None, None, None
        grad_current = torch.zeros_like(grad_spikes[:1] if ctx.shared else grad_spikes)  # [1 or T, B, ...]
        grad_next = None  # gh[t+1]
        for start in reversed(range(0, steps, every)):
            stop = min(start + every, steps)
            h_part = h_saved[start:stop] if every == 1 else _recompute(h_saved, current, start, stop, dyn, every)
            for t in reversed(range(start, stop)):
                grad_next = reverse_step(grad_spikes[t], h_part[t - start], grad_next, dyn)
                grad_current[0 if ctx.shared else t] += grad_next
        if not _is(dyn.gain, 1.0):
            grad_current.mul_(dyn.gain)
        return grad_current, None, None, None, None


def reverse_step(grad_spike: torch.Tensor, h_t: torch.Tensor, grad_next: torch.Tensor | None,
                 dyn: Dynamics) -> torch.Tensor:
    """gh[t] (``_Window``) from g_s[t], h[t] and gh[t+1] (None at t = T - 1)."""
    if grad_next is None:
        return derivative(dyn.surrogate, h_t - dyn.v_th, dyn.alpha).mul_(grad_spike)
    lam = dyn.lam  # dL/dV[t] = lam gh[t+1]
    if not dyn.detach_reset:
        if dyn.reset == "subtract":
            grad_spike = grad_next.mul(-lam * dyn.v_th).add_(grad_spike)
        elif dyn.reset == "hard":
            grad_spike = (dyn.v_reset - h_t).mul_(grad_next).mul_(lam).add_(grad_spike)
        elif dyn.reset == "subtract_late":
            grad_spike = grad_next.mul(-dyn.v_th).add_(grad_spike)
    grad_h = derivative(dyn.surrogate, h_t - dyn.v_th, dyn.alpha).mul_(grad_spike)
    if dyn.reset == "hard":
        silent = _fire_into(h_t, dyn, out=torch.empty_like(h_t)).neg_().add_(1.0)  # 1 - s[t]
        return grad_h.addcmul_(grad_next, silent, value=lam)
    return grad_h.add_(grad_next, alpha=lam)


def window_forward(current: torch.Tensor, steps: int, dyn: Dynamics) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward loop as pure tensor code for torch.compile: current [T or 1, B, ...]
    -> (spikes, membranes h), each [T, B, ...]."""
    v_post = torch.full_like(current[0], dyn.v_init)
    spike = torch.zeros_like(current[0])
    spikes, v_mems = [], []
    for t in range(steps):
        h = _charge(v_post, _at(current, t), dyn)
        if dyn.reset == "subtract_late":
            h = h - dyn.v_th * spike
        spike = (h > dyn.v_th if dyn.strict else h >= dyn.v_th).to(h.dtype)
        if dyn.reset == "subtract":
            v_post = h - dyn.v_th * spike
        elif dyn.reset == "hard":
            v_post = torch.where(spike > 0, dyn.v_reset, h)
        else:
            v_post = h
        spikes.append(spike)
        v_mems.append(h)
    return torch.stack(spikes), torch.stack(v_mems)


def window_backward(grad_spikes: torch.Tensor, v_mems: torch.Tensor, dyn: Dynamics, shared: bool) -> torch.Tensor:
    """The backward loop as pure tensor code for torch.compile: dL/dI [T, B, ...], or its
    sum over t [1, B, ...] for a ``shared`` current."""
    grads, grad_next = [], None
    for t in reversed(range(v_mems.shape[0])):
        grad_next = reverse_step(grad_spikes[t], v_mems[t], grad_next, dyn)
        grads.append(grad_next if not shared or not grads else grads[-1] + grad_next)  # shared: running sum
    result = grads[-1].unsqueeze(0) if shared else torch.stack(grads[::-1])
    return result if _is(dyn.gain, 1.0) else result * dyn.gain


def _at(current: torch.Tensor, t: int) -> torch.Tensor:
    """I[t] of a current [T, B, ...] or [1, B, ...] (the same at every step)."""
    return current[t if current.shape[0] > 1 else 0]


def _recompute(h_saved: torch.Tensor, current: torch.Tensor, start: int, stop: int, dyn: Dynamics,
               every: int) -> torch.Tensor:
    """h[start..stop-1], [stop - start, B, ...], from the saved h[start - 1] (rest before 0)."""
    h_part = current.new_empty((stop - start, *current.shape[1:]))
    if start:
        h_prev = h_saved[start // every - 1]
        spike_prev = _fire_into(h_prev, dyn, out=torch.empty_like(h_prev))  # s[t-1], as the forward made it
        v_post = _reset_into(h_prev, spike_prev, dyn, out=torch.empty_like(h_prev))
    else:
        v_post = torch.full_like(h_part[0], dyn.v_init)
        spike_prev = torch.zeros_like(v_post)
    for t in range(start, stop):
        h = _charge_into(v_post, spike_prev, current[0], dyn, out=h_part[t - start])
        spike_prev = _fire_into(h, dyn, out=torch.empty_like(h))
        v_post = _reset_into(h, spike_prev, dyn, out=v_post)
    return h_part


def lif_window(current: torch.Tensor, steps: int, dyn: Dynamics, compiled: bool = False) -> torch.Tensor:
    """``neuron_steps`` (same spikes, bit for bit; gradients to rounding, tests/test_lif.py)
    at a fraction of its memory, for fixed settings: current [T, B, ...] or [1, B, ...] (the
    same at every one of ``steps``) -> spikes [T, B, ...]. ``compiled``: ``_Window`` under
    torch.compile; otherwise the C kernels (``kernels.cpu``) where ``kernels.native`` says
    so, else ``_Window``'s PyTorch loops."""
    save = torch.is_grad_enabled() and current.requires_grad  # the membranes only for a backward
    if not compiled and kernels.native(current):
        return kernels.cpu.lif_window(current, steps, dyn, save)
    return _Window.apply(current, steps, dyn, save, compiled)


def accumulation_weight(lam: float, t: int) -> float:
    """c[t] = sum_{k<t} lam^k = (1 - lam^t) / (1 - lam) (t for lam = 1), for 1-based step t.

    c[t] is the accumulated weight of a constant input (SAF's bias factor), and c[T]
    normalises the accumulated spike A[T] into the weighted firing rate of Spike
    Representation (A[T] = sum_t lam^(T-t) s[t] has weights summing to c[T]).
    """
    return float(t) if lam == 1.0 else (1.0 - lam ** t) / (1.0 - lam)
