"""``spikeacc.convert``: a SpikingJelly or snnTorch network as an ordinary module that every
spikeacc method trains.

Module swapping, after torch.ao.quantization: the network is copied module by module. A
module of a peer library is replaced by its counterpart from that library's table
(``interop/spikingjelly.py``, ``interop/snntorch.py``: neurons become ``spikeacc.LIF``
settings, layers the torch.nn modules they wrap); every other module, a model's or the
user's own, is copied shallowly with its children converted, so its ``forward`` is kept
and spikeacc reads it as it reads any network (``spikeacc.graph``). The parameters and
buffers are the same objects, in the same order, under the same names: training the
result trains the original's weights, and the two state_dicts share their parameter keys.

A module that has no exact counterpart stops the conversion with one line naming it and
why (``ConversionError``). The converted network computes one time step (a peer's layers
in multi-step mode fold T into the batch; spikeacc's methods do that themselves), so a
forward that itself loops over time steps or keeps a neuron's state cannot be read.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

from torch import nn

from .. import graph


class ConversionError(ValueError):
    """A module of the network has no exact spikeacc counterpart."""


Recurse = Callable[[nn.Module, str], nn.Module]  # converts a child: (module, qualified name) -> module
Converter = Callable[[nn.Module, str, Recurse], nn.Module | None]  # None: not a module of its table


def _library_converters() -> dict[str, Converter]:
    from . import snntorch, spikingjelly
    return {"spikingjelly": spikingjelly.convert_module, "snntorch": snntorch.convert_module}


def convert(net: nn.Module, sample_shape: Sequence[int] | None = None) -> nn.Module:
    """The network with every SpikingJelly / snnTorch module replaced by its spikeacc
    counterpart (module docstring). ``sample_shape``: the shape of one input sample, recorded
    as ``sample_shape`` on the result (spikeacc's models declare it; it tells a static batch
    from a sequence). ConversionError (a ValueError) in one line for what it cannot represent."""
    if not isinstance(net, nn.Module):
        raise ConversionError(f"spikeacc.convert takes an nn.Module, got {type(net).__name__}")
    converters = _library_converters()

    def recurse(module: nn.Module, name: str) -> nn.Module:
        library = type(module).__module__.split(".")[0]
        converted = converters[library](module, name, recurse) if library in converters else None
        return converted if converted is not None else copy_with_children(module, name, recurse)

    converted = recurse(net, "")
    if sample_shape is not None:
        converted.sample_shape = tuple(int(size) for size in sample_shape)
    try:
        graph.of(converted)
    except graph.GraphError as err:
        raise ConversionError(f"the converted network cannot be read as one time step: {err}") from None
    return converted


def holds_peer_modules(net: nn.Module) -> bool:
    """Does the network hold a module of a library ``convert`` reads?"""
    libraries = _library_converters()
    return any(type(module).__module__.split(".")[0] in libraries for module in net.modules())


def copy_with_children(module: nn.Module, name: str, recurse: Recurse) -> nn.Module:
    """A shallow copy of ``module`` (same class, same forward, the same parameter and
    buffer objects) whose children are converted."""
    children = {child: recurse(sub, f"{name}.{child}".lstrip(".")) if sub is not None else None
                for child, sub in module._modules.items()}
    return recast(module, type(module), children)


def recast(module: nn.Module, cls: type[nn.Module], children: dict[str, nn.Module | None] | None = None
           ) -> nn.Module:
    """``module``'s state under another class (e.g. a peer's ``Conv2d`` subclass as
    ``nn.Conv2d``): a shallow copy of its attributes with its own containers (parameters,
    buffers, hooks) copied, holding the same parameter and buffer objects."""
    new = copy.copy(module)
    for key, value in module.__dict__.items():
        if key.startswith("_") and isinstance(value, (dict, set, list)):
            new.__dict__[key] = copy.copy(value)
    new._modules = dict(children or {})
    new.__class__ = cls
    return new


def adopt(new: nn.Module, old: nn.Module, where: str) -> nn.Module:
    """``new`` (a freshly built counterpart) takes ``old``'s own parameters: the same
    objects, in ``old``'s order, under the same names."""
    own = dict(old.named_parameters(recurse=False))
    if set(own) != set(new._parameters):
        raise ConversionError(f"cannot convert {where}: its parameters {sorted(own)} do not map onto "
                              f"{type(new).__name__}'s {sorted(new._parameters)}")
    new._parameters = dict(own)
    return new


def describe(module: nn.Module, name: str) -> str:
    return f"module '{name or '<network>'}' ({type(module).__module__}.{type(module).__name__})"
