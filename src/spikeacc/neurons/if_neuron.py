"""The integrate-and-fire neuron: the LIF family without a leak (lam = 1; neurons/lif.py).

    h[t] = V[t-1] + I[t],   s[t] = H(h[t] - V_th),   V[t] = reset(h[t], s[t])

``IF`` is SpikingJelly's ``IFNode`` (whose default v_reset=0. is ``reset="hard"``);
``asf_neuron`` is ASF-BP's (Wu et al., AAAI 2021; methods.md "ASF-BP"): hard reset to 0,
optionally leaky, v[t] = leak v_reset[t-1] + I[t] (the leak applied after the reset, as the
authors' code does), simulated without a graph (``LIF.free_run``), firing on v >= V_th or,
with ``strict``, on v > V_th as the authors' code does (their ``F.threshold`` keeps values
above the threshold). The two rules differ only when the membrane lands exactly on the
threshold, which is common where inputs are multiples of a fraction of it: the authors'
pooling neurons (threshold 0.75) integrate average-pooled spikes, multiples of 0.25.
"""
from __future__ import annotations

import math

from .lif import LIF, Number


class IF(LIF):
    """A population of IF neurons (``LIF`` with tau = inf; its other settings)."""

    def __init__(self, v_th: Number = 1.0, surrogate: str = "sigmoid", alpha: float = 4.0,
                 detach_reset: bool = False, *, reset: str = "subtract", v_reset: float = 0.0,
                 strict: bool = False, learn_v_th: bool = False) -> None:
        super().__init__(math.inf, v_th, surrogate, alpha, detach_reset, reset=reset, v_reset=v_reset,
                         strict=strict, learn_v_th=learn_v_th)

    def settings(self) -> dict:
        found = super().settings()
        del found["tau"]
        return found


def asf_neuron(v_th: float = 1.0, leak: float = 1.0, strict: bool = False) -> LIF:
    """ASF-BP's neuron: v_th > 0, leak (the membrane kept per step) in (0, 1], hard reset to 0."""
    if not 0.0 < leak <= 1.0:
        raise ValueError(f"IF leak must be in (0, 1], got {leak}")
    if not v_th > 0.0:
        raise ValueError(f"IF v_th must be > 0, got {v_th}")
    return LIF(beta=leak, v_th=v_th, reset="hard", strict=strict)
