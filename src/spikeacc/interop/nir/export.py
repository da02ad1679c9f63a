"""spikeacc networks as NIR graphs (``export``, ``save``, ``export_checkpoint``).

``export(net)`` walks the network's traced graph (``spikeacc.graph``) and writes one NIR
node per op; NIR shapes and dims count per sample (no batch dim):

* ``nn.Linear`` -> ``Affine(W, b)``, or ``Linear(W)`` without bias; ``F.linear`` likewise.
* ``nn.Conv2d`` / ``F.conv2d`` -> ``Conv2d(input_shape, W, stride, padding, dilation,
  groups, bias)`` (zero bias for a bias-free conv); scaled weight standardisation
  exports the weight it computes.
* ``nn.AvgPool2d`` -> ``AvgPool2d(kernel, stride, padding)``. NIR's AvgPool2d is its
  SumPool2d followed by Scale 1/(k_h k_w): the window sum over k_h k_w, zero padding
  included, which is torch's ``count_include_pad=True``. ``nn.AdaptiveAvgPool2d`` whose
  output size divides the input size is the same pooling with kernel = stride = in/out.
  For Norse (``target="norse"``), which reads no AvgPool2d, the same pooling is written as
  the Conv2d that computes it (weights 1/(k_h k_w) from each channel to itself).
* ``nn.Flatten(start, end)`` / ``torch.flatten`` -> ``Flatten(start - 1, end - 1)``
  (a negative dim is kept: it counts from the end either way).
* ``x * c`` for a number c (``spikeacc.layers.Scale``) -> ``Scale(c)`` per element.
* ``a + b`` -> an edge from each of a and b into every consumer (a NIR node sums its
  inputs); ``nn.Identity`` -> an edge.
* the LIF family -> NIR's LIF (IF without a leak) by ``neurons.neuron_node``: exact for a
  hard reset firing on >, otherwise written only with ``allow_lossy=True``, the difference
  recorded in the graph's metadata ("lossy").

``CONSUMERS``: the dt each named reader needs (``target``); exporting for one at another
dt warns.
"""
from __future__ import annotations

import io
import math
import operator
import warnings
from pathlib import Path
from typing import Any, Sequence

import nir
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.node import map_aggregate

from ... import __version__, graph, methods
from ...checkpoint import atomic_write, read_checkpoint
from ...graph import OP, SITE, CallContext, Pass, Program
from ...graph.ops import LinearOp, Sum, WeightedFn
from ...graph.program import Node, Ref
from ...model_spec import build_network
from .neurons import lossy, neuron_node

ArrayLike = np.ndarray | Sequence[int] | int

CONSUMERS = {  # target: (the dt it reads a graph with, how to read it)
    "snntorch": (1e-4, "snntorch.import_nir.import_from_nir(graph) always steps with dt = 1e-4"),
    "norse": (1e-3, "norse.torch.from_nir(graph, dt=...) steps with the dt it is given (its default 1e-3)"),
}


def export(net: nn.Module, sample_shape: Sequence[int] | None = None, dt: float | None = None,
           allow_lossy: bool = False, target: str | None = None) -> nir.NIRGraph:
    """The network as a NIR graph (module docstring), for samples of ``sample_shape``
    (default ``net.sample_shape``) and simulation step ``dt`` in NIR's time unit (default:
    the target's, ``CONSUMERS``, else 1.0). ``target`` ("snntorch", "norse"): the reader the
    file is for; a dt it would misread warns.

    ValueError (one line) for an op NIR cannot express exactly, and for neurons whose rules
    differ from NIR's unless ``allow_lossy``; with it, the graph's metadata records the
    difference (key "lossy").
    """
    if target is not None and target not in CONSUMERS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(CONSUMERS)}")
    dt = (CONSUMERS[target][0] if target else 1.0) if dt is None else dt
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    if target == "snntorch" and not math.isclose(dt, CONSUMERS["snntorch"][0]):
        warnings.warn(f"exporting at dt={dt} for snnTorch, whose importer always steps with dt = 1e-4: it would "
                      "misread every time constant; export with dt=1e-4", stacklevel=2)
    shape = _sample_shape(net, sample_shape)
    program = graph.of(net)
    with torch.no_grad():
        writer = _GraphWriter(program, zero_sample(net, shape), float(dt), target)
        try:
            writer.run()
        except RuntimeError as err:
            raise ValueError(f"the network does not run on samples of shape {list(shape)}: "
                             f"{first_line(err)}") from None
    metadata: dict[str, Any] = {"source": f"spikeacc {__version__}", "dt": float(dt)}
    if target:
        metadata["target"] = f"{target}: {CONSUMERS[target][1]}"
    differences = {site.name: lossy(site.module) for site in program.sites if lossy(site.module)}
    if differences:
        name, found = next(iter(differences.items()))
        if not allow_lossy:
            raise ValueError(
                f"cannot export neuron '{name}' exactly to NIR: it {'; it '.join(found)}; export with "
                "allow_lossy=True (spikeacc export --allow-lossy) to write it anyway, with the "
                "difference recorded in the graph's metadata")
        metadata["lossy"] = "; ".join(f"'{name}' {'; '.join(found)}" for name, found in differences.items())
    return nir.NIRGraph(writer.nodes, writer.edges, metadata=metadata)


def save(nir_graph: nir.NIRGraph, path: str | Path) -> None:
    """Write the graph to a NIR file (HDF5), atomically; ValueError if it cannot."""
    buffer = io.BytesIO()
    nir.write(buffer, nir_graph)
    try:
        atomic_write(Path(path), lambda f: f.write(buffer.getvalue()))
    except OSError as err:
        raise ValueError(f"cannot write {path}: {err.strerror or err}") from None


def export_checkpoint(checkpoint: str | Path, out: str | Path, dt: float | None = None,
                      allow_lossy: bool = False, target: str | None = None) -> nir.NIRGraph:
    """Rebuild the network of a ``spikeacc train`` checkpoint, export it and write ``out``.
    Refuses checkpoints of methods whose neurons are not spikeacc's LIF (asf, single-spike)."""
    path = Path(checkpoint)
    state = read_checkpoint(path, what="export")
    config = state["config"]
    _check_lif_method(config, path)
    if "sample_shape" not in state:
        raise ValueError(f"{path} does not record its sample shape (written by an older spikeacc); "
                         "train it again to export it")
    net = build_network(config["model"], state["sample_shape"], state["n_classes"], hidden=config["hidden"],
                        options=config.get("model_options", {}))
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: its weights do not fit model {config['model']!r} "
                         f"({first_line(err)})") from None
    nir_graph = export(net, dt=dt, allow_lossy=allow_lossy, target=target)
    nir_graph.metadata["method"] = config["method"]
    save(nir_graph, out)
    return nir_graph


def _check_lif_method(config: dict, path: Path) -> None:
    name = config["method"]
    method = methods.get(name, T=config["T"], **config.get("method_options", {}))
    if not isinstance(method, methods.LIF_METHODS):
        raise ValueError(f"{path} was trained with method {name!r}, which runs its own neurons at the "
                         "LIF positions, not spikeacc's LIF; only checkpoints of the LIF-based methods "
                         "(bptt, ottt, sr, saf) export to NIR")


def _sample_shape(net: nn.Module, sample_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = sample_shape if sample_shape is not None else getattr(net, "sample_shape", None)
    if shape is None:
        raise ValueError("export needs the shape of one input sample: pass sample_shape or set "
                         "net.sample_shape")
    return tuple(int(size) for size in shape)


def zero_sample(net: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """One sample [1, *shape] in the network's dtype and device."""
    weight = next(net.parameters(), None)
    return torch.zeros(1, *shape) if weight is None else weight.new_zeros(1, *shape)


class _GraphWriter:
    """Runs the program once on a zero sample (silent neurons), which gives every value's
    shape and every computed weight, and collects NIR nodes and edges on the way."""

    def __init__(self, program: Program, x: torch.Tensor, dt: float, target: str | None) -> None:
        self.program, self.dt, self.target = program, dt, target
        self.values = Pass(program, CallContext(1))
        self.values.set(program.input, x)
        self.nodes: dict[str, nir.NIRNode] = {"input": nir.Input(np.array(x.shape[1:]))}
        self.edges: list[tuple[str, str]] = []
        self.feeds: dict[int, list[str]] = {program.input: ["input"]}  # value = sum of these NIR nodes
        self.sites = {site.index: site for site in program.sites}

    def run(self) -> None:
        for node in self.program.nodes:
            if node.kind == SITE:
                self._site(node)
            elif node.kind == OP:
                self._op(node)
        out = self.values.get(self.program.output)
        self._add("output", nir.Output(np.array(out.shape[1:])), self.feeds[self.program.output])

    def _site(self, node: Node) -> None:
        site = self.sites[node.index]
        current = self.values.get(site.input)  # [1, *neuron shape]
        self.values.set(node.index, torch.zeros_like(current))
        neuron = neuron_node(site.module, tuple(current.shape[1:]), self.dt)
        self.feeds[node.index] = [self._add(site.name, neuron, self.feeds[site.input])]

    def _op(self, node: Node) -> None:
        args, kwargs = Pass._resolve(node, self.values.get)
        in_shape = tuple(self.values.get(node.data_args[0]).shape[1:])
        sources = [name for i in _operands(node) for name in self.feeds[i]]
        converted = _convert(node, args, kwargs, in_shape)
        if self.target == "norse" and isinstance(converted, nir.AvgPool2d):
            converted = _pooling_conv(converted, in_shape)
        if converted is None:  # identity or sum: the consumers read the sources directly
            self.feeds[node.index] = sources
            return
        _check_types(converted, in_shape, tuple(self.values.get(node.index).shape[1:]), node.describe())
        self.feeds[node.index] = [self._add(node.op.name, converted, sources)]

    def _add(self, name: str, nir_node: nir.NIRNode, sources: list[str]) -> str:
        """Add a node fed by ``sources`` (summed); returns its unique name."""
        if len(set(sources)) != len(sources):
            repeated = next(s for s in sources if sources.count(s) > 1)
            raise ValueError(f"cannot export: node '{name}' reads '{repeated}' twice (e.g. x + x); NIR "
                             "edges cannot repeat")
        unique, k = name, 1
        while unique in self.nodes:
            unique, k = f"{name}_{k}", k + 1
        self.nodes[unique] = nir_node
        self.edges += [(source, unique) for source in sources]
        return unique


def _operands(node: Node) -> list[int]:
    """The data values an op reads, once per time it reads them (x + x: twice)."""
    found: list[int] = []
    map_aggregate((node.args, node.kwargs),
                  lambda a: found.append(a.index) if isinstance(a, Ref) and a.index in node.data_args else None)
    return found


def _check_types(nir_node: nir.NIRNode, in_shape: tuple[int, ...], out_shape: tuple[int, ...], where: str) -> None:
    """The input and output types NIR gives the node must be the op's shapes (NIR 1.0.8
    sizes a conv's output with the kernel height in both dims and gives a grouped conv
    C_in / groups input channels; graphs with such nodes fail NIR's own type check)."""
    for kind, shape in (("input", in_shape), ("output", out_shape)):
        declared = getattr(nir_node, f"{kind}_type").get(kind)
        if declared is not None and tuple(np.atleast_1d(declared).tolist()) != shape:
            raise ValueError(f"cannot export {where}: NIR {nir.version} gives its {kind} the shape "
                             f"{np.atleast_1d(declared).tolist()}, the op's is {list(shape)}")


# --- op -> NIR node -------------------------------------------------------------------------

EXPORTED_OPS = ("Linear, Conv2d, AvgPool2d, AdaptiveAvgPool2d with whole windows, Flatten, Identity, "
                "addition, multiplication by a number, LIF")


def _convert(node: Node, args: tuple, kwargs: dict, in_shape: tuple[int, ...]) -> nir.NIRNode | None:
    """The NIR node of one op (None: an identity or a sum, expressed by edges), or a
    ValueError naming the op and why."""
    op, where = node.op, node.describe()
    if op.module is not None:
        return _convert_module(op.module, in_shape, where)
    if isinstance(op, WeightedFn) and op.fn is F.linear:
        _, weight, bias = _bind(args, kwargs, ("input", "weight", "bias"), (None,))
        return _dense(weight, bias, in_shape, where)
    if isinstance(op, WeightedFn) and op.fn is F.conv2d:
        _, weight, bias, stride, padding, dilation, groups = _bind(
            args, kwargs, ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
            (None, 1, 0, 1, 1))
        return _conv(weight, bias, stride, padding, dilation, groups, in_shape, where)
    if isinstance(op, Sum) and _calls(node, "add") and not op.constant_slots and not kwargs:
        return None
    if isinstance(op, LinearOp) and _calls(node, "flatten"):
        _, start, end = _bind(args, kwargs, ("input", "start_dim", "end_dim"), (0, -1))
        return _flatten(start, end, in_shape, where)
    if isinstance(op, LinearOp) and _calls(node, "mul") and _number_operand(node) is not None:
        return nir.Scale(np.full(in_shape, _number_operand(node), dtype=np.float64))
    raise ValueError(f"cannot export {where} to NIR: no exact NIR node for it (exported: {EXPORTED_OPS})")


def _convert_module(module: nn.Module, in_shape: tuple[int, ...], where: str) -> nir.NIRNode | None:
    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.Linear):
        return _dense(module.weight, module.bias, in_shape, where)
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError(f"cannot export {where}: padding_mode {module.padding_mode!r} (NIR pads with zeros)")
        return _conv(module.weight, module.bias, module.stride, module.padding, module.dilation,
                     module.groups, in_shape, where)
    if isinstance(module, nn.AvgPool2d):
        return _avg_pool(module, in_shape, where)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        return _adaptive_avg_pool(module, in_shape, where)
    if isinstance(module, nn.Flatten):
        return _flatten(module.start_dim, module.end_dim, in_shape, where)
    raise ValueError(f"cannot export {where} to NIR: no exact NIR node for it (exported: {EXPORTED_OPS})")


def _calls(node: Node, name: str) -> bool:
    """Does the op compute torch.<name> or operator.<name> (in-place forms are mapped to
    these by the op table), or the method Tensor.<name>?"""
    if node.label.startswith("Tensor."):
        return node.label == f"Tensor.{name}"
    return node.op.fn in (getattr(torch, name, None), getattr(operator, name, None))


def _number_operand(node: Node) -> float | None:
    """The number c of ``x * c`` / ``c * x`` (None if the other operand is not a number)."""
    constants = [a for a in node.args if not isinstance(a, Ref)]
    if len(node.args) != 2 or node.kwargs or len(constants) != 1:
        return None
    value = constants[0]
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _bind(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: tuple) -> list:
    """Arguments of a torch function by position or name; ``defaults`` for the last ones."""
    bound = list(args) + [None] * (len(names) - len(args))
    first_default = len(names) - len(defaults)
    for i, name in enumerate(names):
        if i >= len(args):
            bound[i] = kwargs.get(name, defaults[i - first_default] if i >= first_default else None)
    return bound


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def _dense(weight: torch.Tensor, bias: torch.Tensor | None, in_shape: tuple[int, ...], where: str) -> nir.NIRNode:
    if len(in_shape) != 1:
        raise ValueError(f"cannot export {where}: NIR's Affine takes one vector per sample, this input "
                         f"is {list(in_shape)} (flatten it first)")
    if bias is None:
        return nir.Linear(_array(weight))
    return nir.Affine(_array(weight), _array(bias))


def pair(value: ArrayLike) -> tuple[int, int]:
    values = np.atleast_1d(np.asarray(value)).astype(int).tolist()
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _conv(weight: torch.Tensor, bias: torch.Tensor | None, stride: ArrayLike, padding: ArrayLike | str,
          dilation: ArrayLike, groups: int, in_shape: tuple[int, ...], where: str) -> nir.Conv2d:
    if weight.dim() != 4 or len(in_shape) != 3:
        raise ValueError(f"cannot export {where}: NIR's Conv2d takes [C, H, W] samples, this input is "
                         f"{list(in_shape)}")
    dilation = pair(dilation)
    padding = symmetric_padding(padding, tuple(weight.shape[2:]), dilation, where)
    bias = weight.new_zeros(weight.shape[0]) if bias is None else bias
    return nir.Conv2d(input_shape=in_shape[1:], weight=_array(weight), stride=pair(stride),
                      padding=padding, dilation=dilation, groups=int(groups), bias=_array(bias))


def symmetric_padding(padding: ArrayLike | str, kernel: tuple[int, ...], dilation: tuple[int, int],
                       where: str) -> tuple[int, int]:
    """Zero padding per side; "same" only where it pads both sides equally."""
    if not isinstance(padding, str):
        return pair(padding)
    if padding == "valid":
        return (0, 0)
    totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
    if any(total % 2 for total in totals):
        raise ValueError(f"cannot export {where}: padding 'same' pads one side more than the other "
                         "here, NIR's padding is symmetric")
    return (totals[0] // 2, totals[1] // 2)


def _avg_pool(module: nn.AvgPool2d, in_shape: tuple[int, ...], where: str) -> nir.AvgPool2d:
    kernel, padding = pair(module.kernel_size), pair(module.padding)
    stride = pair(module.stride)
    if len(in_shape) != 3:
        raise ValueError(f"cannot export {where}: NIR's AvgPool2d takes [C, H, W] samples, this input "
                         f"is {list(in_shape)}")
    if module.ceil_mode or module.divisor_override is not None:
        raise ValueError(f"cannot export {where}: ceil_mode and divisor_override have no NIR counterpart")
    if not module.count_include_pad and any(padding):
        raise ValueError(f"cannot export {where}: count_include_pad=False with padding (NIR's AvgPool2d "
                         "divides by the whole kernel area)")
    return nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(stride), padding=np.array(padding))


def _adaptive_avg_pool(module: nn.AdaptiveAvgPool2d, in_shape: tuple[int, ...], where: str) -> nir.AvgPool2d:
    if len(in_shape) != 3:
        raise ValueError(f"cannot export {where}: NIR's AvgPool2d takes [C, H, W] samples")
    sizes = in_shape[1:]
    wanted = module.output_size if isinstance(module.output_size, tuple) else (module.output_size,) * 2
    out = [size if w is None else w for size, w in zip(sizes, wanted)]
    if any(size % o for size, o in zip(sizes, out)):
        raise ValueError(f"cannot export {where}: output {out} does not divide input {list(sizes)}, so its "
                         "windows differ in size (NIR's AvgPool2d has one kernel)")
    kernel = np.array([size // o for size, o in zip(sizes, out)])
    return nir.AvgPool2d(kernel_size=kernel, stride=kernel.copy(), padding=np.zeros(2, dtype=int))


def _pooling_conv(pool: nir.AvgPool2d, in_shape: tuple[int, ...]) -> nir.Conv2d:
    """The Conv2d that computes an average pooling: weight 1/(k_h k_w) from each channel to itself."""
    kernel, channels = pair(pool.kernel_size), in_shape[0]
    weight = np.zeros((channels, channels, *kernel))
    weight[np.arange(channels), np.arange(channels)] = 1.0 / (kernel[0] * kernel[1])
    return nir.Conv2d(input_shape=in_shape[1:], weight=weight, stride=pair(pool.stride), padding=pair(pool.padding),
                      dilation=(1, 1), groups=1, bias=np.zeros(channels))


def _flatten(start: int, end: int, in_shape: tuple[int, ...], where: str) -> nir.Flatten:
    if start == 0 or end == 0:
        raise ValueError(f"cannot export {where}: it flattens the batch dim")
    per_sample = [dim - 1 if dim > 0 else dim for dim in (start, end)]
    return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=per_sample[0], end_dim=per_sample[1])


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
