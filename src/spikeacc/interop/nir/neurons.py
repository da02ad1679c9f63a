"""spikeacc's neurons as NIR's and back.

NIR's LIF is tau dv/dt = (v_leak - v) + r I: one forward Euler step of dt is
v[t] = lam v[t-1] + (1 - lam) v_leak + (dt r / tau) I[t] with lam = 1 - dt/tau; it fires
where v > v_threshold and then sets v = v_reset. NIR's IF is dv/dt = r I. spikeacc's LIF
family (neurons/lif.py) is h[t] = lam V[t-1] + (1 - lam) v_rest + g I[t]. With the membrane
scaled, v = s h, the two are the same equation for

    tau = dt tau_spikeacc,  r = 1,  v_threshold = s V_th,  v_reset = s v_reset,  v_leak = s v_rest

where s = 1 - lam for g = 1 and s = 1 with ``decay_input`` (g = 1 - lam), and, for the IF
neuron (lam = 1), NIR's IF with r = 1 and s = dt. r = 1 is the form both consumers read as
NIR defines it (Norse ignores r; snnTorch divides the threshold by dt r / tau), and it is
NIR-equivalent to r = 1/(1 - lam) with s = 1.

A hard reset with ``strict`` (firing on >) is then NIR's neuron exactly; every other reset
and firing on >= is not (``lossy``): they are written with allow_lossy=True, with the
neuron's own rules kept in its node's metadata (key "spikeacc"), from which ``neuron_module``
restores them; a node without them reads with NIR's rules (hard reset, firing on >), exactly.
"""
from __future__ import annotations

import json
import math

import nir
import numpy as np
import torch

from ...neurons import IF, LIF

RULES = ("reset", "v_reset", "decay_input", "strict", "surrogate", "alpha", "detach_reset")  # not values
_RESET_DIFFERENCE = {
    "subtract": "subtracts V_th from the membrane after a spike",
    "subtract_late": "subtracts V_th one step after a spike",
    "subtract_snntorch": "subtracts V_th after a spike and again from a membrane left above it",
    "none": "never resets",
}


def lossy(neuron: LIF) -> list[str]:
    """How the neuron's rules differ from NIR's (none: NIR holds it exactly)."""
    found = []
    if neuron.reset != "hard":
        found.append(f"{_RESET_DIFFERENCE[neuron.reset]} where NIR sets v = v_reset")
    if not neuron.strict:
        found.append("fires on v >= V_th where NIR fires on v > v_threshold")
    return found


def neuron_node(neuron: LIF, shape: tuple[int, ...], dt: float) -> nir.NIRNode:
    """The neuron as NIR's LIF or IF over neurons of ``shape`` (module docstring)."""
    dyn = neuron.dynamics()
    lam = _values(dyn.lam, shape)
    v_th = _values(dyn.v_th, shape)
    v_reset = np.full(shape, neuron.v_reset if neuron.reset == "hard" else 0.0)
    metadata = {"spikeacc": json.dumps({key: getattr(neuron, key) for key in RULES})}
    if np.all(lam == 1.0):
        return nir.IF(r=np.ones(shape), v_threshold=dt * v_th, v_reset=dt * v_reset, metadata=metadata)
    if np.any(lam >= 1.0) or np.any(lam <= 0.0):
        raise ValueError(f"NIR's LIF needs a leak in (0, 1) for every neuron (tau = dt / (1 - lam)), got {lam.min()}"
                         f" to {lam.max()}")
    tau = np.full(shape, neuron.tau) if neuron.leak_kind == "tau" else 1.0 / (1.0 - lam)  # tau as given, exactly
    scale = np.ones(shape) if neuron.decay_input else 1.0 / tau
    return nir.LIF(tau=dt * tau, r=np.ones(shape), v_leak=scale * v_reset, v_threshold=scale * v_th,
                   v_reset=scale * v_reset, metadata=metadata)


def _values(value: float | torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    array = value.detach().cpu().double().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, float)
    return np.broadcast_to(array, shape).astype(np.float64)


def neuron_module(node: nir.LIF | nir.IF, name: str, dt: float) -> LIF:
    """NIR's LIF or IF node as spikeacc's neuron (``neuron_node``'s inverse): exact, with the
    rules of its metadata if spikeacc wrote it, else NIR's (hard reset, firing on >)."""
    what = f"NIR node '{name}'"
    rules = json.loads(node.metadata["spikeacc"]) if "spikeacc" in getattr(node, "metadata", {}) else {
        "reset": "hard", "strict": True}
    if isinstance(node, nir.IF):
        lam, gain = 1.0, dt * uniform(node.r, f"{what} r")  # v = gain h
        tau, v_leak = math.inf, 0.0
    else:
        tau_n = uniform(node.tau, f"{what} tau")
        lam, tau = 1.0 - dt / tau_n, tau_n / dt
        gain = dt * uniform(node.r, f"{what} r") / tau_n
        if rules.get("decay_input"):
            gain /= 1.0 - lam
        v_leak = uniform(node.v_leak, f"{what} v_leak") / gain
    v_reset = uniform(node.v_reset, f"{what} v_reset") / gain if node.v_reset is not None else 0.0
    if rules["reset"] != "hard":
        v_reset = 0.0 if math.isclose(v_reset, 0.0, abs_tol=1e-12) else v_reset
    if not math.isclose(v_leak, v_reset if rules["reset"] == "hard" else 0.0, rel_tol=1e-9, abs_tol=1e-12):
        raise ValueError(f"{what}: v_leak = {v_leak * gain} where spikeacc's neurons leak toward their reset "
                         f"value {v_reset * gain}")
    v_th = np.asarray(node.v_threshold, dtype=np.float64) / gain
    settings = {**{key: rules[key] for key in RULES if key in rules},
                "v_reset": v_reset if rules["reset"] == "hard" else 0.0,
                "v_th": float(v_th.flat[0]) if np.all(v_th == v_th.flat[0]) else torch.from_numpy(v_th)}
    try:
        return IF(**settings) if tau == math.inf else LIF(tau=tau, **settings)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: {err}") from None


def uniform(values, what: str) -> float:
    """The one value of a parameter array (spikeacc's layers share one tau, r, v_leak, v_reset)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or np.any(array != array.flat[0]):
        raise ValueError(f"{what} varies across neurons; spikeacc reads one value per layer")
    return float(array.flat[0])
