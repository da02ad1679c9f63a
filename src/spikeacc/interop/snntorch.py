"""snnTorch networks, read by ``spikeacc.convert`` (interop/convert.py).

``snn.Leaky`` becomes ``spikeacc.LIF`` with snnTorch's rules (ecosystem.md "The peers'
neurons"): lam = clamp(beta, 0, 1), firing on mem > threshold (``strict``), the reset
detached as snnTorch detaches it, and per ``reset_mechanism`` / ``reset_delay``:

    "subtract", reset_delay=True (default)   reset="subtract_late"      (V_th leaves one step late)
    "subtract", reset_delay=False            reset="subtract_snntorch"  (at once, rechecked)
    "zero"                                   reset="hard", v_reset=0    (either delay: the same spikes)
    "none"                                   reset="none"

``learn_beta`` and ``learn_threshold`` keep snnTorch's parameters ``beta`` and ``threshold``
(the same objects); a beta or threshold tensor of several values stays per neuron; one
value becomes a number. The surrogates read are ``atan(alpha)`` (snnTorch's default),
``fast_sigmoid(slope)`` and ``sigmoid(slope)``, spikeacc's "atan", "fast_sigmoid" and
"sigmoid" with alpha = alpha or slope. snnTorch's other layers are torch.nn's, kept as
they are.

snnTorch keeps a neuron's state inside the module (``init_hidden=True``, the layers of an
``nn.Sequential``) or passes it through a forward that loops over time; spikeacc reads the
first form, one step of the network. An ``output=True`` neuron (the last of its tutorials'
networks, returning spikes and membrane) becomes an ordinary neuron: the network's
output is then its spikes, and spikeacc's per-step cross-entropy on them is snnTorch's
``ce_rate_loss``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..neurons import LIF
from .convert import ConversionError, Recurse, adopt, describe

SURROGATES = {"atan": ("atan", "alpha"), "fast_sigmoid": ("fast_sigmoid", "slope"), "sigmoid": ("sigmoid", "slope")}
RESETS = {("subtract", True): dict(reset="subtract_late", detach_reset=True),
          ("subtract", False): dict(reset="subtract_snntorch"),
          ("zero", True): dict(reset="hard", detach_reset=True),
          ("zero", False): dict(reset="hard"),
          ("none", True): dict(reset="none"), ("none", False): dict(reset="none")}


def convert_module(module: nn.Module, name: str, recurse: Recurse) -> nn.Module | None:
    """The spikeacc counterpart of one snnTorch module; ConversionError for the rest."""
    import snntorch

    where = describe(module, name)
    if type(module) is snntorch.Leaky:
        return _leaky(module, where)
    raise ConversionError(f"cannot convert {where}: spikeacc reads snnTorch's Leaky neuron (and torch.nn "
                          "layers); it has no exact counterpart for this one")


def _leaky(leaky: nn.Module, where: str) -> LIF:
    refused = {"inhibition": leaky.inhibition, "state_quant": bool(leaky.state_quant),
               "surrogate_disable": leaky.surrogate_disable,
               "graded spikes": isinstance(leaky.graded_spikes_factor, nn.Parameter)
               or float(leaky.graded_spikes_factor) != 1.0}
    if any(refused.values()):
        setting = next(key for key, value in refused.items() if value)
        raise ConversionError(f"cannot convert {where}: {setting} has no spikeacc counterpart")
    if not leaky.init_hidden:
        raise ConversionError(f"cannot convert {where}: with init_hidden=False its state lives in the forward "
                              "that calls it (a loop over time steps); build the network with "
                              "snn.Leaky(..., init_hidden=True) layers, one step per forward")
    settings = dict(RESETS[(leaky.reset_mechanism, bool(leaky.reset_delay))], strict=True,
                    **_surrogate(leaky.spike_grad, where), **_leak(leaky.beta), **_threshold(leaky.threshold))
    try:
        neuron = LIF(**settings)
    except ValueError as err:
        raise ConversionError(f"cannot convert {where}: {err}") from None
    return adopt(neuron, leaky, where)


def _leak(beta: torch.Tensor) -> dict:
    if isinstance(beta, nn.Parameter):
        return {"beta": beta.detach(), "learn_beta": True}
    if beta.numel() > 1:
        return {"beta": beta}
    return {"beta": min(max(float(beta), 0.0), 1.0)}  # snnTorch clamps beta to [0, 1]


def _threshold(threshold: torch.Tensor) -> dict:
    if isinstance(threshold, nn.Parameter):
        return {"v_th": threshold.detach(), "learn_v_th": True}
    return {"v_th": threshold if threshold.numel() > 1 else float(threshold)}


def _surrogate(spike_grad, where: str) -> dict:
    """spikeacc's surrogate for one of snnTorch's (closures named ``<kind>.<locals>.inner``)."""
    kind = getattr(spike_grad, "__qualname__", "").split(".")[0]
    if kind not in SURROGATES or spike_grad.__code__.co_freevars != (SURROGATES[kind][1],):
        raise ConversionError(f"cannot convert {where}: surrogate {getattr(spike_grad, '__qualname__', spike_grad)!r} "
                              f"has no spikeacc counterpart (spikeacc reads snnTorch's {', '.join(SURROGATES)})")
    value = spike_grad.__closure__[0].cell_contents
    if not (isinstance(value, (int, float)) and math.isfinite(value)):
        raise ConversionError(f"cannot convert {where}: surrogate {kind} with {SURROGATES[kind][1]}={value!r}")
    return {"surrogate": SURROGATES[kind][0], "alpha": float(value)}
