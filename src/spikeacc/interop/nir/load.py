"""NIR graphs as spikeacc networks (``load``, ``NIRNetwork``).

Each node becomes the module that computes it: Affine / Linear -> nn.Linear, Conv2d ->
nn.Conv2d, AvgPool2d -> nn.AvgPool2d, Flatten -> nn.Flatten (dims + 1: a batch dim in
front), Scale (one factor) -> ``spikeacc.layers.Scale``, LIF and IF -> the LIF family by
``neurons.neuron_module``: exact with NIR's rules, or a graph spikeacc wrote reads back as
the network it came from. Anything else is a ValueError (one line) naming the node.
"""
from __future__ import annotations

import functools
import operator
from pathlib import Path
from typing import Any, Callable, Sequence

import nir
import numpy as np
import torch
from torch import nn

from ... import graph
from ...graph import CallContext
from ...layers import Scale
from ...methods.base import run_window
from .export import first_line, pair, symmetric_padding, zero_sample
from .neurons import uniform, neuron_module


class NIRNetwork(nn.Module):
    """A NIR graph as a spikeacc network. ``layers`` holds one module per NIR node in a
    topological order; ``forward`` evaluates them in that order, each on the sum of its
    sources (NIR's edges sum into a node), and returns the sum of the Output's sources.
    No data-dependent control flow: spikeacc's methods trace and train it like any network."""

    def __init__(self, layers: dict[str, nn.Module], sources: dict[str, list[str]], input_name: str,
                 output_sources: list[str], sample_shape: Sequence[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)
        self.sources, self.input_name, self.output_sources = sources, input_name, output_sources
        self.sample_shape = tuple(int(size) for size in sample_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_name: x}
        for name, layer in self.layers.items():
            values[name] = layer(_sum(values, self.sources[name]))
        return _sum(values, self.output_sources)


def _sum(values: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return functools.reduce(operator.add, [values[name] for name in names])


def load(source: str | Path | nir.NIRGraph, dt: float = 1.0) -> NIRNetwork:
    """A spikeacc network from a NIR file or graph, for simulation step ``dt`` (module docstring)."""
    nir_graph = source if isinstance(source, nir.NIRGraph) else _read(Path(source))
    input_name, output_name = _only(nir_graph, nir.Input), _only(nir_graph, nir.Output)
    order, sources = _topological_order(nir_graph, input_name)
    names = _module_names([input_name, *order])
    layers = {names[name]: _import_node(nir_graph.nodes[name], name, dt) for name in order}
    net = NIRNetwork(layers, {names[n]: [names[s] for s in sources[n]] for n in order}, names[input_name],
                     [names[s] for s in sources[output_name]],
                     np.atleast_1d(nir_graph.nodes[input_name].input_type["input"]).tolist())
    _check_runs(net)
    return net


def _read(path: Path) -> nir.NIRGraph:
    if not path.is_file():
        raise ValueError(f"no NIR file at {path}")
    try:
        return nir.read(path, type_check=False)
    except Exception as err:  # noqa: BLE001  (h5py and nir raise many kinds)
        raise ValueError(f"{path} is not a NIR file ({type(err).__name__}: {first_line(err)})") from None


def _only(nir_graph: nir.NIRGraph, kind: type) -> str:
    found = [name for name, node in nir_graph.nodes.items() if isinstance(node, kind)]
    if len(found) != 1:
        raise ValueError(f"the NIR graph has {len(found)} {kind.__name__} nodes; spikeacc reads graphs "
                         f"with exactly one")
    return found[0]


def _topological_order(nir_graph: nir.NIRGraph, input_name: str) -> tuple[list[str], dict[str, list[str]]]:
    """The nodes after the Input in an order where every node follows its sources, and
    each node's sources; ValueError for unknown names, cycles and unreachable nodes."""
    sources: dict[str, list[str]] = {name: [] for name in nir_graph.nodes}
    for src, dst in nir_graph.edges:
        if src not in sources or dst not in sources:
            raise ValueError(f"NIR edge ({src!r}, {dst!r}) names a node the graph does not have")
        sources[dst].append(src)
    if sources[input_name]:
        raise ValueError(f"the NIR graph's Input '{input_name}' has incoming edges; spikeacc reads "
                         "feed-forward graphs")
    done, order = {input_name}, []
    waiting = [name for name in nir_graph.nodes if name != input_name]
    while waiting:
        ready = [name for name in waiting if sources[name] and set(sources[name]) <= done]
        if not ready:
            raise ValueError(f"NIR node '{waiting[0]}' is not fed by the Input through a feed-forward path "
                             "(a cycle or a missing edge); spikeacc reads feed-forward graphs")
        order += ready
        done.update(ready)
        waiting = [name for name in waiting if name not in done]
    return [name for name in order if not isinstance(nir_graph.nodes[name], nir.Output)], sources


def _module_names(names: list[str]) -> dict[str, str]:
    """NIR names as distinct nn.Module names ('.' is not allowed there)."""
    taken: set[str] = set()
    result = {}
    for name in names:
        base = name.replace(".", "_") or "node"
        unique, k = base, 1
        while unique in taken:
            unique, k = f"{base}_{k}", k + 1
        taken.add(unique)
        result[name] = unique
    return result


def _check_runs(net: NIRNetwork) -> None:
    """One zero sample through the network (silent neurons): shapes that do not fit
    become a ValueError here."""
    program = graph.of(net)
    x = zero_sample(net, net.sample_shape)
    try:
        with torch.no_grad():
            run_window(program, CallContext(1), x, 1, 1, lambda site, current: torch.zeros_like(current))
    except RuntimeError as err:
        raise ValueError(f"the NIR graph's shapes do not fit together: {first_line(err)}") from None


def _import_node(node: nir.NIRNode, name: str, dt: float) -> nn.Module:
    importer = IMPORTERS.get(type(node))
    if importer is None:
        raise ValueError(f"NIR node '{name}' ({type(node).__name__}) has no exact spikeacc counterpart "
                         f"(read: {', '.join(kind.__name__ for kind in IMPORTERS)})")
    return importer(node, name, dt)


def _parameter(target: torch.Tensor, value: np.ndarray, what: str) -> None:
    value = np.asarray(value)
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"{what} has shape {list(value.shape)}, expected {list(target.shape)}")
    if not np.isfinite(value).all():
        raise ValueError(f"{what} holds {np.count_nonzero(~np.isfinite(value))} NaN or infinite value(s)")
    with torch.no_grad():
        target.copy_(torch.from_numpy(value.astype(np.float64)))


def _import_dense(node: nir.Affine | nir.Linear, name: str, dt: float) -> nn.Linear:
    weight = np.asarray(node.weight)
    if weight.ndim != 2:
        raise ValueError(f"NIR node '{name}': weight of shape {list(weight.shape)}, spikeacc reads 2-d weights")
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=isinstance(node, nir.Affine))
    _parameter(layer.weight, weight, f"NIR node '{name}' weight")
    if layer.bias is not None:
        _parameter(layer.bias, node.bias, f"NIR node '{name}' bias")
    return layer


def _import_conv(node: nir.Conv2d, name: str, dt: float) -> nn.Conv2d:
    weight, bias, groups = np.asarray(node.weight), np.asarray(node.bias), int(node.groups)
    dilation = pair(node.dilation)
    padding = symmetric_padding(node.padding, tuple(weight.shape[2:]), dilation, f"NIR node '{name}'")
    layer = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), pair(node.stride),
                      padding, dilation, groups, bias=bool(np.any(bias != 0)))
    _parameter(layer.weight, weight, f"NIR node '{name}' weight")
    if layer.bias is not None:
        _parameter(layer.bias, bias, f"NIR node '{name}' bias")
    return layer


def _import_avg_pool(node: nir.AvgPool2d, name: str, dt: float) -> nn.AvgPool2d:
    kernel, stride, padding = pair(node.kernel_size), pair(node.stride), pair(node.padding)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"NIR node '{name}': padding {list(padding)} exceeds half the kernel {list(kernel)}")
    return nn.AvgPool2d(kernel, stride, padding)


def _import_flatten(node: nir.Flatten, name: str, dt: float) -> nn.Flatten:
    start, end = (int(dim) + 1 if dim >= 0 else int(dim) for dim in (node.start_dim, node.end_dim))
    return nn.Flatten(start, end)


def _import_scale(node: nir.Scale, name: str, dt: float) -> Scale:
    return Scale(uniform(node.scale, f"NIR node '{name}' scale"))


IMPORTERS: dict[type, Callable[[Any, str, float], nn.Module]] = {
    nir.Affine: _import_dense,
    nir.Linear: _import_dense,
    nir.Conv2d: _import_conv,
    nir.AvgPool2d: _import_avg_pool,
    nir.Flatten: _import_flatten,
    nir.Scale: _import_scale,
    nir.LIF: neuron_module,
    nir.IF: neuron_module,
}
