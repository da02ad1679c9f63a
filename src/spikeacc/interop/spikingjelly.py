"""SpikingJelly's ``activation_based`` networks, read by ``spikeacc.convert`` (interop/convert.py).

Neurons (ecosystem.md "The peers' neurons"), with their surrogate (``Sigmoid(alpha)`` or
``ATan(alpha)``), ``detach_reset`` and ``v_threshold``:

    LIFNode(tau, decay_input, v_reset)   LIF(tau, decay_input=..., reset="hard", v_reset=...),
                                         or reset="subtract" for v_reset=None
    IFNode(v_reset)                      IF(reset=...) likewise
    ParametricLIFNode(init_tau, ...)     LIF(learn_tau=True, ...) holding its parameter ``w``
    OTTTLIFNode(tau, ...)                LIF (its online training is spikeacc's OTTT method;
                                         SAF-E gives the same gradient with half the products)

Layers: the single/multi-step wrappers of torch.nn layers (``layer.Conv2d``, ``Linear``,
``BatchNorm2d``, pooling, ``Flatten``, ...) become those torch.nn classes; ``WSConv2d`` /
``WSLinear`` spikeacc's ``ScaledWSConv2d`` / ``ScaledWSLinear`` (the same standardisation);
``Dropout`` / ``Dropout2d`` the torch ones (spikeacc draws one mask per window, as
SpikingJelly does per sequence); ``VotingLayer`` ``spikeacc.layers.Voting``; the containers
``SeqToANNContainer``, ``MultiStepContainer``, ``StepModeContainer`` and ``OTTTSequential``
an ``nn.Sequential``, ``GradwithTrace`` / ``SpikeTraceOp`` their module; the OTTT VGG's
``Scale`` spikeacc's ``Scale``. The model classes (``activation_based.model``) keep their
forward. Every converted module that had a ``step_mode`` answers "s": spikeacc's methods
run one step at a time or fold the steps into the batch themselves, so a model's forward
takes its single-step branch.

A BatchNorm in training mode normalises over all T steps of a window in spikeacc (as
SpikingJelly's multi-step mode does); one in single-step mode normalised each step on its
own, so converting it warns.
"""
from __future__ import annotations

import functools
import warnings
from collections import OrderedDict
from typing import Any

from torch import nn

from ..layers import Scale, ScaledWSConv2d, ScaledWSLinear, Voting
from ..neurons import IF, LIF
from .convert import ConversionError, Recurse, adopt, copy_with_children, describe, recast

MODEL_PACKAGE = "spikingjelly.activation_based.model"
SURROGATES = {"Sigmoid": "sigmoid", "ATan": "atan"}


@functools.cache
def _tables() -> tuple[dict[type, type], tuple[type, ...], dict[type, Any]]:
    """(SpikingJelly layer -> torch.nn class, its containers, its neurons -> converter);
    imported only when a SpikingJelly module is met."""
    from spikingjelly.activation_based import layer, neuron

    wrappers = {}
    for name in ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
                 "Upsample", "GroupNorm", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d",
                 "AvgPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "Linear",
                 "Flatten", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"):
        if hasattr(layer, name):
            wrappers[getattr(layer, name)] = getattr(nn, name)
    wrappers.update({layer.WSConv2d: ScaledWSConv2d, layer.WSLinear: ScaledWSLinear,
                     layer.Dropout: nn.Dropout, layer.Dropout2d: nn.Dropout2d})
    containers = (layer.SeqToANNContainer, layer.MultiStepContainer, layer.StepModeContainer,
                  layer.OTTTSequential)
    neurons = {neuron.LIFNode: _lif, neuron.IFNode: _if, neuron.ParametricLIFNode: _plif,
               neuron.OTTTLIFNode: _lif}
    return wrappers, containers, neurons


def convert_module(module: nn.Module, name: str, recurse: Recurse) -> nn.Module | None:
    """The spikeacc counterpart of one SpikingJelly module (None: a model class, whose
    forward is kept); ConversionError for a module it has no exact counterpart for."""
    from spikingjelly.activation_based import layer

    wrappers, containers, neurons = _tables()
    kind, where = type(module), describe(module, name)
    if kind in neurons:
        return _single_step(neurons[kind](module, where), module)
    if kind in wrappers:
        return _single_step(_wrapper(module, wrappers[kind], where), module)
    if isinstance(module, containers):  # single-step, each is its layers in a row
        sequential = nn.Sequential(OrderedDict(
            (key, recurse(child, f"{name}.{key}".lstrip("."))) for key, child in module._modules.items()))
        sequential.training = module.training
        return sequential
    if isinstance(module, (layer.GradwithTrace, layer.SpikeTraceOp)):
        return recurse(module.module, f"{name}.module".lstrip("."))
    if kind is layer.VotingLayer:
        return _single_step(Voting(module.voting_size), module)
    if kind.__module__.startswith(MODEL_PACKAGE):
        if kind.__name__ == "Scale" and not module._modules and not module._parameters:
            return Scale(module.scale)
        return copy_with_children(module, name, recurse)
    raise ConversionError(f"cannot convert {where}: spikeacc has no exact counterpart for it (it reads "
                          "LIFNode, IFNode, ParametricLIFNode, OTTTLIFNode, the wrapped torch.nn layers, "
                          "WSConv2d, WSLinear, Dropout, VotingLayer and the sequential containers)")


def _in_multi_step(module: nn.Module) -> bool:
    return getattr(module, "step_mode", "s") == "m"


def _single_step(converted: nn.Module, original: nn.Module) -> nn.Module:
    if hasattr(original, "step_mode"):
        converted.step_mode = "s"  # a model's forward takes its single-step branch
    return converted


def _wrapper(module: nn.Module, cls: type[nn.Module], where: str) -> nn.Module:
    if cls in (nn.Dropout, nn.Dropout2d):
        converted = cls(module.p)
        converted.train(module.training)
        return converted
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training and not _in_multi_step(module):
        warnings.warn(f"spikeacc.convert: {where} is a BatchNorm in single-step mode; in training mode "
                      "spikeacc normalises over all T steps of a window (SpikingJelly's multi-step mode), "
                      "not over each step alone", stacklevel=4)
    return recast(module, cls)


def _surrogate(node: nn.Module, where: str) -> dict:
    function = node.surrogate_function
    name = SURROGATES.get(type(function).__name__)
    if name is None or not getattr(function, "spiking", False):
        raise ConversionError(f"cannot convert {where}: surrogate {type(function).__name__} has no spikeacc "
                              f"counterpart (spikeacc reads {', '.join(SURROGATES)} in spiking mode)")
    return {"surrogate": name, "alpha": float(function.alpha)}


def _reset(node: nn.Module) -> dict:
    if node.v_reset is None:
        return {"reset": "subtract"}
    return {"reset": "hard", "v_reset": float(node.v_reset)}


def _common(node: nn.Module, where: str) -> dict:
    return {"v_th": float(node.v_threshold), "detach_reset": bool(node.detach_reset), **_surrogate(node, where),
            **_reset(node)}


def _lif(node: nn.Module, where: str) -> LIF:
    return _built(lambda: LIF(tau=float(node.tau), decay_input=bool(node.decay_input), **_common(node, where)), where)


def _if(node: nn.Module, where: str) -> IF:
    return _built(lambda: IF(**_common(node, where)), where)


def _plif(node: nn.Module, where: str) -> LIF:
    converted = _built(lambda: LIF(tau=float(1.0 / node.w.detach().sigmoid()), learn_tau=True,
                                   decay_input=bool(node.decay_input), **_common(node, where)), where)
    return adopt(converted, node, where)


def _built(build, where: str) -> nn.Module:
    try:
        return build()
    except ValueError as err:
        raise ConversionError(f"cannot convert {where}: {err}") from None
