"""NIR (Neuromorphic Intermediate Representation) export and import; needs the ``nir``
package (``pip install 'spikeacc[nir]'``).

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
* ``nn.Flatten(start, end)`` / ``torch.flatten`` -> ``Flatten(start - 1, end - 1)``
  (a negative dim is kept: it counts from the end either way).
* ``x * c`` for a number c (``spikeacc.layers.Scale``) -> ``Scale(c)`` per element.
* ``a + b`` -> an edge from each of a and b into every consumer (a NIR node sums its
  inputs); ``nn.Identity`` -> an edge.
* ``LIF(tau, v_th)`` -> ``LIF(tau = tau dt, r = tau, v_leak = 0, v_threshold = V_th,
  v_reset = 0)``, per neuron (``lif_node``).

Between spikes the LIF mapping is exact; the reset and firing rules are not (``LOSSY``),
so a network with LIF neurons is written only with ``allow_lossy=True``, which records
the difference in the graph's metadata. ``load`` is the inverse for the same node types.
"""
from __future__ import annotations

import functools
import io
import math
import operator
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.fx.node import map_aggregate

try:
    import nir
except ImportError as err:  # the optional extra
    raise ImportError("NIR export and import need the 'nir' package: pip install 'spikeacc[nir]'") from err

from . import __version__, graph, methods
from .graph import OP, SITE, CallContext, Pass, Program
from .graph.ops import LinearOp, Sum, WeightedFn
from .graph.program import Node, Ref
from .layers import Scale
from .methods.base import run_window
from .models import build
from .neurons import LIF
from .checkpoint import atomic_write, read_checkpoint

LOSSY = ("spikeacc's LIF subtracts V_th from the membrane after a spike and fires on v >= V_th; "
         "NIR's LIF sets v = v_reset after a spike and fires on v > v_threshold")

ArrayLike = np.ndarray | Sequence[int] | int


# --- export: spikeacc -> NIR ----------------------------------------------------------------

def lif_node(lif: LIF, shape: tuple[int, ...], dt: float) -> nir.LIF:
    """spikeacc's LIF as NIR's LIF, by forward Euler with step dt.

    NIR: tau_n dv/dt = (v_leak - v) + R I, so one Euler step is
    v[t] = v[t-1] + (dt / tau_n) (v_leak - v[t-1] + R I[t]). With tau_n = tau dt, R = tau,
    v_leak = 0 this is v[t] = (1 - 1/tau) v[t-1] + I[t], spikeacc's
    u[t] = lam (u[t-1] - V_th s[t-1]) + I[t] (lam = 1 - 1/tau) while s[t-1] = 0.
    After a spike the two differ (``LOSSY``); v_reset = 0 is where spikeacc's membrane
    lands when it fires exactly at V_th.
    """
    def full(value: float) -> np.ndarray:
        return np.full(shape, value, dtype=np.float64)

    return nir.LIF(tau=full(lif.tau * dt), r=full(lif.tau), v_leak=full(0.0),
                   v_threshold=full(lif.v_th), v_reset=full(0.0))


def export(net: nn.Module, sample_shape: Sequence[int] | None = None, dt: float = 1.0,
           allow_lossy: bool = False) -> nir.NIRGraph:
    """The network as a NIR graph (module docstring), for samples of ``sample_shape``
    (default ``net.sample_shape``) and simulation step ``dt`` in NIR's time unit.

    ValueError (one line) for an op NIR cannot express exactly, and for LIF neurons
    unless ``allow_lossy`` (``LOSSY``); with it, the graph's metadata records the
    difference (key "lossy").
    """
    if not (isinstance(dt, (int, float)) and math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive finite number, got {dt!r}")
    shape = _sample_shape(net, sample_shape)
    program = graph.of(net)
    with torch.no_grad():
        writer = _GraphWriter(program, _zero_sample(net, shape), float(dt))
        try:
            writer.run()
        except RuntimeError as err:
            raise ValueError(f"the network does not run on samples of shape {list(shape)}: "
                             f"{_first_line(err)}") from None
    metadata: dict[str, Any] = {"source": f"spikeacc {__version__}", "dt": float(dt)}
    if program.sites:
        if not allow_lossy:
            raise ValueError(
                f"cannot export LIF '{program.sites[0].name}' exactly to NIR: {LOSSY}; export with "
                "allow_lossy=True (spikeacc export --allow-lossy) to write it anyway, with the "
                "difference recorded in the graph's metadata")
        metadata["lossy"] = f"LIF nodes hold spikeacc's LIF: {LOSSY}"
    return nir.NIRGraph(writer.nodes, writer.edges, metadata=metadata)


def save(nir_graph: nir.NIRGraph, path: str | Path) -> None:
    """Write the graph to a NIR file (HDF5), atomically; ValueError if it cannot."""
    buffer = io.BytesIO()
    nir.write(buffer, nir_graph)
    try:
        atomic_write(Path(path), lambda f: f.write(buffer.getvalue()))
    except OSError as err:
        raise ValueError(f"cannot write {path}: {err.strerror or err}") from None


def export_checkpoint(checkpoint: str | Path, out: str | Path, dt: float = 1.0,
                      allow_lossy: bool = False) -> nir.NIRGraph:
    """Rebuild the network of a ``spikeacc train`` checkpoint, export it and write ``out``.
    Refuses checkpoints of methods whose neurons are not spikeacc's LIF (asf, single-spike)."""
    path = Path(checkpoint)
    state = read_checkpoint(path, what="export")
    config = state["config"]
    _check_lif_method(config, path)
    if "sample_shape" not in state:
        raise ValueError(f"{path} does not record its sample shape (written by an older spikeacc); "
                         "train it again to export it")
    net = build(config["model"], tuple(state["sample_shape"]), state["n_classes"], hidden=config["hidden"])
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ValueError(f"{path}: its weights do not fit model {config['model']!r} "
                         f"({_first_line(err)})") from None
    nir_graph = export(net, dt=dt, allow_lossy=allow_lossy)
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


def _zero_sample(net: nn.Module, shape: tuple[int, ...]) -> torch.Tensor:
    """One sample [1, *shape] in the network's dtype and device."""
    weight = next(net.parameters(), None)
    return torch.zeros(1, *shape) if weight is None else weight.new_zeros(1, *shape)


class _GraphWriter:
    """Runs the program once on a zero sample (silent neurons), which gives every value's
    shape and every computed weight, and collects NIR nodes and edges on the way."""

    def __init__(self, program: Program, x: torch.Tensor, dt: float) -> None:
        self.program, self.dt = program, dt
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
        lif = lif_node(site.module, tuple(current.shape[1:]), self.dt)
        self.feeds[node.index] = [self._add(site.name, lif, self.feeds[site.input])]

    def _op(self, node: Node) -> None:
        args, kwargs = Pass._resolve(node, self.values.get)
        in_shape = tuple(self.values.get(node.data_args[0]).shape[1:])
        sources = [name for i in _operands(node) for name in self.feeds[i]]
        converted = _convert(node, args, kwargs, in_shape)
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


def _pair(value: ArrayLike) -> tuple[int, int]:
    values = np.atleast_1d(np.asarray(value)).astype(int).tolist()
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _conv(weight: torch.Tensor, bias: torch.Tensor | None, stride: ArrayLike, padding: ArrayLike | str,
          dilation: ArrayLike, groups: int, in_shape: tuple[int, ...], where: str) -> nir.Conv2d:
    if weight.dim() != 4 or len(in_shape) != 3:
        raise ValueError(f"cannot export {where}: NIR's Conv2d takes [C, H, W] samples, this input is "
                         f"{list(in_shape)}")
    dilation = _pair(dilation)
    padding = _symmetric_padding(padding, tuple(weight.shape[2:]), dilation, where)
    bias = weight.new_zeros(weight.shape[0]) if bias is None else bias
    return nir.Conv2d(input_shape=in_shape[1:], weight=_array(weight), stride=_pair(stride),
                      padding=padding, dilation=dilation, groups=int(groups), bias=_array(bias))


def _symmetric_padding(padding: ArrayLike | str, kernel: tuple[int, ...], dilation: tuple[int, int],
                       where: str) -> tuple[int, int]:
    """Zero padding per side; "same" only where it pads both sides equally."""
    if not isinstance(padding, str):
        return _pair(padding)
    if padding == "valid":
        return (0, 0)
    totals = [d * (k - 1) for d, k in zip(dilation, kernel)]
    if any(total % 2 for total in totals):
        raise ValueError(f"cannot export {where}: padding 'same' pads one side more than the other "
                         "here, NIR's padding is symmetric")
    return (totals[0] // 2, totals[1] // 2)


def _avg_pool(module: nn.AvgPool2d, in_shape: tuple[int, ...], where: str) -> nir.AvgPool2d:
    kernel, padding = _pair(module.kernel_size), _pair(module.padding)
    stride = _pair(module.stride)
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


def _flatten(start: int, end: int, in_shape: tuple[int, ...], where: str) -> nir.Flatten:
    if start == 0 or end == 0:
        raise ValueError(f"cannot export {where}: it flattens the batch dim")
    per_sample = [dim - 1 if dim > 0 else dim for dim in (start, end)]
    return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=per_sample[0], end_dim=per_sample[1])


# --- import: NIR -> spikeacc ----------------------------------------------------------------

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


def load(source: str | Path | nir.NIRGraph, dt: float = 1.0, allow_lossy: bool = False) -> NIRNetwork:
    """A spikeacc network from a NIR file or graph, for simulation step ``dt``.

    Accepts Input, Output, Affine, Linear, Conv2d, AvgPool2d, Flatten, Scale (one factor)
    and LIF with v_leak = 0, v_reset = 0, r = tau/dt (> 1) and one value per parameter,
    which is spikeacc's LIF(tau = r, v_th = v_threshold) between spikes; as in ``export``,
    LIF nodes are read only with ``allow_lossy`` (``LOSSY``). Anything else is a
    ValueError (one line) naming the node.
    """
    nir_graph = source if isinstance(source, nir.NIRGraph) else _read(Path(source))
    input_name, output_name = _only(nir_graph, nir.Input), _only(nir_graph, nir.Output)
    order, sources = _topological_order(nir_graph, input_name)
    lifs = [name for name in order if isinstance(nir_graph.nodes[name], nir.LIF)]
    if lifs and not allow_lossy:
        raise ValueError(f"cannot read LIF node '{lifs[0]}' exactly: {LOSSY}; load with allow_lossy=True "
                         "to read it as spikeacc's LIF anyway")
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
        raise ValueError(f"{path} is not a NIR file ({type(err).__name__}: {_first_line(err)})") from None


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
    x = _zero_sample(net, net.sample_shape)
    try:
        with torch.no_grad():
            run_window(program, CallContext(1), x, 1, 1, lambda site, current: torch.zeros_like(current))
    except RuntimeError as err:
        raise ValueError(f"the NIR graph's shapes do not fit together: {_first_line(err)}") from None


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
    dilation = _pair(node.dilation)
    padding = _symmetric_padding(node.padding, tuple(weight.shape[2:]), dilation, f"NIR node '{name}'")
    layer = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), _pair(node.stride),
                      padding, dilation, groups, bias=bool(np.any(bias != 0)))
    _parameter(layer.weight, weight, f"NIR node '{name}' weight")
    if layer.bias is not None:
        _parameter(layer.bias, bias, f"NIR node '{name}' bias")
    return layer


def _import_avg_pool(node: nir.AvgPool2d, name: str, dt: float) -> nn.AvgPool2d:
    kernel, stride, padding = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError(f"NIR node '{name}': padding {list(padding)} exceeds half the kernel {list(kernel)}")
    return nn.AvgPool2d(kernel, stride, padding)


def _import_flatten(node: nir.Flatten, name: str, dt: float) -> nn.Flatten:
    start, end = (int(dim) + 1 if dim >= 0 else int(dim) for dim in (node.start_dim, node.end_dim))
    return nn.Flatten(start, end)


def _import_scale(node: nir.Scale, name: str, dt: float) -> Scale:
    return Scale(_uniform(node.scale, f"NIR node '{name}' scale"))


def _import_lif(node: nir.LIF, name: str, dt: float) -> LIF:
    """NIR's LIF as spikeacc's (``lif_node`` is its inverse): needs v_leak = 0, v_reset = 0
    and r = tau_n / dt, so that one Euler step is v[t] = (1 - 1/r) v[t-1] + I[t]."""
    what = f"NIR node '{name}'"
    tau_n, r = _uniform(node.tau, f"{what} tau"), _uniform(node.r, f"{what} r")
    v_leak, v_reset = _uniform(node.v_leak, f"{what} v_leak"), _uniform(node.v_reset, f"{what} v_reset")
    v_threshold = _uniform(node.v_threshold, f"{what} v_threshold")
    if v_leak != 0.0 or v_reset != 0.0:
        raise ValueError(f"{what}: v_leak = {v_leak} and v_reset = {v_reset}; spikeacc's LIF has both 0")
    if not math.isclose(tau_n, r * dt, rel_tol=1e-6):
        raise ValueError(f"{what}: r = {r} is not tau/dt = {tau_n}/{dt}, so its input gain dt*r/tau is not 1 "
                         "as in spikeacc's LIF (pass the dt the graph was made for)")
    try:
        return LIF(tau=r, v_th=v_threshold)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from None


def _uniform(values: ArrayLike, what: str) -> float:
    """The one value of a parameter array (spikeacc's layers share one value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0 or np.any(array != array.flat[0]):
        raise ValueError(f"{what} varies across neurons; spikeacc reads one value per layer")
    return float(array.flat[0])


IMPORTERS: dict[type, Callable[[Any, str, float], nn.Module]] = {
    nir.Affine: _import_dense,
    nir.Linear: _import_dense,
    nir.Conv2d: _import_conv,
    nir.AvgPool2d: _import_avg_pool,
    nir.Flatten: _import_flatten,
    nir.Scale: _import_scale,
    nir.LIF: _import_lif,
}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
