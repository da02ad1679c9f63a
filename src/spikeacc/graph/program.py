"""A network's dataflow as the methods see it: sources, neuron sites, affine ops.

``of(net)`` traces ``net`` once (``trace.py``), sorts its nodes into

* the **input** (the forward's tensor argument),
* **sites**: one per neuron node (``spikeacc.LIF``), whose value is its spikes,
* **ops**: nodes of data between them, evaluated by the op table (``ops.py``),
* **static** nodes that depend only on parameters and constants (e.g. a standardised
  weight), evaluated once per method call, and **meta** nodes (``x.size(0)``),

and caches the result on the network (re-read when its modules change). A method runs
the network with its own meaning of a value: it creates a ``Pass``, sets the values of
the sources (input and sites) and asks for the values it needs (a site's input, the
output); the pass evaluates the ops in between, with constant terms scaled by the pass's
``Bias``. Values may hold several time steps merged into the batch dim ([S*B, ...]);
a pass tracks S per value and broadcasts a one-step value (a static input's product,
computed once) where it meets an S-step one.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx as fx
from torch import nn
from torch.fx.node import map_aggregate

from .ops import IDENTITY, Bias, Op, is_meta, make_op, method_caller
from .trace import NEURON_TYPES, GraphError, trace

INPUT, SITE, STATIC, META, OP = "input", "site", "static", "meta", "op"
DATA = (INPUT, SITE, OP)


@dataclass(frozen=True)
class Ref:
    """An argument that is the value of node ``index``."""

    index: int


@dataclass
class Node:
    index: int
    name: str  # the fx node's name
    kind: str  # INPUT, SITE, STATIC, META or OP
    args: tuple  # fx arguments with nodes replaced by Ref
    kwargs: dict
    call: Callable | None  # evaluates a STATIC or META node from resolved args
    op: Op | None  # evaluates an OP node
    owner: str  # qualified name of the innermost module the node belongs to ("" at top level)
    data_args: tuple[int, ...] = ()  # indices of the data nodes among its arguments
    label: str = ""  # what it calls: a function's or method's name
    refs: tuple[int, ...] = ()  # indices of every node among its arguments

    def describe(self) -> str:
        if self.op is not None and self.op.module is not None:
            return f"module '{self.owner}' ({type(self.op.module).__name__})"
        where = f" in module '{self.owner}'" if self.owner else ""
        return f"op '{self.name}' ({self.label}){where}"


@dataclass
class Site:
    """A neuron node: ``module`` (e.g. a LIF) fires on the value of node ``input``."""

    index: int  # node index of the neuron (its value: the spikes)
    name: str  # the neuron module's qualified name
    module: nn.Module
    input: int  # node index of its input current


class Program:
    """The traced network (module docstring). ``sources_of[i]``: the source nodes
    (input, sites) that node i's value depends on through ops."""

    def __init__(self, net: nn.Module) -> None:
        graph = trace(net)
        modules = dict(net.named_modules())
        self.nodes: list[Node] = []
        self.sites: list[Site] = []
        index_of: dict[fx.Node, int] = {}
        for fx_node in graph.nodes:
            if fx_node.op == "output":
                self.output = index_of[fx_node.args[0]]
                continue
            node = self._node(fx_node, len(self.nodes), index_of, modules, net)
            index_of[fx_node] = node.index
            self.nodes.append(node)
        self.input = next(n.index for n in self.nodes if n.kind == INPUT)
        self.sources_of = self._sources()
        self.input_only = {n.index for n in self.nodes if n.kind == OP and self.sources_of[n.index] == {self.input}}
        self.spike_readers = frozenset(n.index for n in self.nodes if n.kind == OP and len(n.data_args) == 1
                                       and self.nodes[n.data_args[0]].kind == SITE)  # ops on a site's value
        self.users = [0] * len(self.nodes)  # consumers of each node's value: nodes, and the caller of the output
        for node in self.nodes:
            for i in node.refs:
                self.users[i] += 1
        self.users[self.output] += 1
        if self.nodes[self.output].kind not in DATA:
            raise GraphError("the network's output does not depend on its input")

    # --- construction ------------------------------------------------------------------------

    def _node(self, fx_node: fx.Node, index: int, index_of: dict, modules: dict, net: nn.Module) -> Node:
        kinds = [n.kind for n in self.nodes]
        args = map_aggregate(fx_node.args, lambda a: Ref(index_of[a]) if isinstance(a, fx.Node) else a)
        kwargs = map_aggregate(fx_node.kwargs, lambda a: Ref(index_of[a]) if isinstance(a, fx.Node) else a)
        refs: list[int] = []
        map_aggregate((args, kwargs), lambda a: refs.append(a.index) if isinstance(a, Ref) else None)
        data_args = tuple(dict.fromkeys(i for i in refs if kinds[i] in DATA))
        stack = fx_node.meta.get("nn_module_stack") or {}
        owner = next(reversed(stack.values()))[0] if stack else ""
        op, target = fx_node.op, fx_node.target
        label = f"Tensor.{target}" if op == "call_method" else getattr(target, "__name__", str(target))
        node = Node(index, fx_node.name, STATIC, args, kwargs, None, None, owner, data_args, label,
                    tuple(dict.fromkeys(refs)))
        if op == "placeholder":
            node.kind = INPUT if not fx_node.args else STATIC
            default = fx_node.args[0] if fx_node.args else None
            node.call = lambda args, kwargs: default
        elif op == "get_attr":
            net_ref = weakref.ref(net)  # read at run time: a replaced parameter is seen
            node.call = lambda args, kwargs: _fetch(net_ref(), target)
        elif op == "call_module" and isinstance(modules[target], NEURON_TYPES):
            if len(data_args) != 1 or len(args) != 1 or kwargs:
                raise GraphError(f"neuron '{target}' must be called on one tensor of data")
            node.kind, node.owner = SITE, target
            self.sites.append(Site(index, target, modules[target], data_args[0]))
        elif not data_args:
            node.kind = META if any(kinds[i] == META for i in refs) else STATIC
            node.call = _caller(op, target, modules)
        elif is_meta(op, target, fx_node.args):
            node.kind, node.call = META, _caller(op, target, modules)
        else:
            module = modules[target] if op == "call_module" else None
            name = target if op == "call_module" else owner or fx_node.name
            if op == "call_module":
                node.owner = target
            node.kind = OP
            node.op = make_op(op, target, args, kwargs, lambda a: _holds_data(a, kinds), module, name, index)
        return node

    def _sources(self) -> list[frozenset[int]]:
        sources: list[frozenset[int]] = []
        for node in self.nodes:
            if node.kind in (INPUT, SITE):
                sources.append(frozenset((node.index,)))
            else:
                sources.append(frozenset().union(*(sources[i] for i in node.data_args)))
        return sources

    # --- queries -------------------------------------------------------------------------------

    def check_affine(self, method: str) -> None:
        """ValueError naming the first op that is not affine (in its current state)."""
        for node in self.nodes:
            if node.kind == OP:
                reason = node.op.not_affine_now()
                if reason:
                    raise ValueError(
                        f"method {method!r} cannot run {node.describe()}: it {reason}. {method} needs "
                        "every op between neurons to be affine (Linear, Conv, AvgPool, Flatten, add, cat, "
                        "scaled weight standardisation, BatchNorm in eval mode); bptt and single-spike "
                        "accept any op")

    def site_of(self, index: int) -> Site:
        return next(site for site in self.sites if site.index == index)

    def readout_sites(self) -> list[Site]:
        """The sites the output reads directly (through ops only)."""
        return [site for site in self.sites if site.index in self.sources_of[self.output]]


def _holds_data(arg: Any, kinds: list[str]) -> bool:
    found = []
    map_aggregate(arg, lambda a: found.append(True) if isinstance(a, Ref) and kinds[a.index] in DATA else None)
    return bool(found)


def _caller(op: str, target: Any, modules: dict) -> Callable:
    if op == "call_module":
        module = modules[target]
        return lambda args, kwargs: module(*args, **kwargs)
    fn = method_caller(target) if op == "call_method" else target
    return lambda args, kwargs: fn(*args, **kwargs)


def _fetch(net: nn.Module, target: str) -> Any:
    value: Any = net
    for part in target.split("."):
        value = getattr(value, part)
    return value


# --- passes ---------------------------------------------------------------------------------

class CallContext:
    """What one method call shares across its passes.

    * ``batch``; the dropout masks (drawn once per call, so every time step and every
      pass sees the same ones);
    * the values of static nodes (keyed by node and grad mode, so that a value computed
      under no_grad is never reused where gradients are needed; ``clear_statics`` once
      their graph is spent or the parameters change);
    * ``spike_inputs``: the op nodes whose one data input is a site's spikes (0/1), where
      a product keeps that input as bits for its backward (``spike_products``; set by
      ``methods.base.lif_forward`` when a graph is built);
    * ``static_input``: x [B, ...] when the same input is fed at every step. The ops that
      read only the input (``Program.input_only``) are then evaluated once per call, at x
      with unscaled constant terms (``unit_value``), and a pass whose input is s x with
      constant terms scaled by s takes s times those values (``Pass.set_input``). With
      ``leaves`` (a training call) those values are computed once with a graph and enter
      the passes as leaves (detached in steps without a graph); ``flush`` sends the
      gradients the leaves accumulated through the one product (after the backward, and
      before every update of a method that updates per step), ``clear_input_values``
      after the parameters change. With ``once`` and no leaves (a training call of a
      method that backpropagates once) they are computed once with a graph and handed
      out as they are (detached where no graph is being built): one backward reaches the
      parameters, without a second pass through the leaves.
    """

    def __init__(self, batch: int, static_input: torch.Tensor | None = None, leaves: bool = False,
                 once: bool = False) -> None:
        self.batch, self.static_input, self.leaves = batch, static_input, leaves
        self.once = leaves or once  # input-only values computed once, with a graph
        self.spike_inputs: frozenset[int] = frozenset()  # ops whose input is spikes, kept as bits (spike_products)
        self.masks: dict[int, torch.Tensor] = {}
        self.statics: dict[tuple[int, bool], Any] = {}
        self.units: dict[tuple[int, bool], Any] = {}
        self._unit_passes: dict[bool, Pass] = {}
        self._graphs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (value with graph, its leaf)

    def clear_statics(self) -> None:
        self.statics.clear()

    def unit_value(self, program: Program, index: int) -> torch.Tensor:
        """The value of input-only node ``index`` at the static input, constant terms
        unscaled. With ``leaves`` (a training call) it is computed once, with a graph, and
        handed out as a leaf (detached where no graph is being built); ``flush`` sends the
        leaf's gradient through that graph. With ``once`` alone it is computed once, with a
        graph, and handed out as it is (detached where no graph is being built)."""
        grad = torch.is_grad_enabled()
        key = (index, True) if self.once else (index, grad)
        if key not in self.units:
            with torch.set_grad_enabled(key[1]):
                if key[1] not in self._unit_passes:
                    unit = Pass(program, self)
                    unit.set(program.input, self.static_input)
                    self._unit_passes[key[1]] = unit
                value = self._unit_passes[key[1]].get(index)
            if self.leaves and value.requires_grad:
                leaf = value.detach().requires_grad_()
                self._graphs.append((value, leaf))
                value = leaf
            self.units[key] = value
        value = self.units[key]
        return value if grad or not value.requires_grad else value.detach()

    def flush(self) -> None:
        """Backpropagate the gradients accumulated in the leaves through their products."""
        for value, leaf in self._graphs:
            if leaf.grad is not None:
                value.backward(leaf.grad, retain_graph=True)
                leaf.grad = None

    def clear_input_values(self) -> None:
        self.units.clear()
        self._unit_passes.clear()
        self._graphs.clear()


class Pass:
    """One evaluation of the network's ops with given source values (module docstring).

    Static nodes are evaluated once per method call (``ctx.statics``). The value of an
    op or a site is dropped once every consumer has read it (its args as they are
    computed; a site's input and the output when the caller ``take``s them), so a pass
    holds no more intermediate values than a plain forward would.
    """

    def __init__(self, program: Program, ctx: CallContext, bias: Bias = IDENTITY) -> None:
        self.program, self.ctx, self.bias = program, ctx, bias
        self.values: list[Any] = [None] * len(program.nodes)
        self.steps: list[int] = [1] * len(program.nodes)
        self.unread = list(program.users)
        self.input_scale: float | None = None  # the input is input_scale * ctx.static_input

    def set_input(self, value: torch.Tensor, scale: float | None = None, steps: int = 1) -> None:
        """The input's value. ``scale``: the value is scale * ctx.static_input; where this
        pass's constant terms are scaled alike, the input-only ops then take scale times
        their once-per-call values instead of running (CallContext)."""
        self.set(self.program.input, value, steps)
        same_scale = self.bias.value == scale and self.bias.grad in (None, scale)
        self.input_scale = scale if same_scale and self.ctx.static_input is not None else None

    def take(self, index: int) -> Any:
        """``get`` for the caller's own use of a value (a site's input, the output)."""
        value = self.get(index)
        self._read(index)
        return value

    def _read(self, index: int) -> None:
        self.unread[index] -= 1
        if self.unread[index] <= 0 and self.program.nodes[index].kind in (OP, META, SITE):
            self.values[index] = None

    def set(self, index: int, value: torch.Tensor, steps: int = 1) -> None:
        """The value of a source (or a replaced node): [steps * B, ...]."""
        self.values[index], self.steps[index] = value, steps

    def get(self, index: int) -> Any:
        value = self.values[index]
        return self.compute(index) if value is None else value

    def compute(self, index: int) -> Any:
        """Evaluate node ``index`` from its arguments (stored, and returned)."""
        node = self.program.nodes[index]
        if node.kind == STATIC:
            key, statics = (index, torch.is_grad_enabled()), self.ctx.statics
            if key not in statics:
                statics[key] = node.call(*self._resolve(node, self.get))
            return statics[key]
        if node.kind in (INPUT, SITE):
            raise RuntimeError(f"spikeacc: the value of source {node.name!r} was not set")
        if self.input_scale is not None and index in self.program.input_only:
            value = self.ctx.unit_value(self.program, index)
            self.values[index] = value if self.input_scale == 1.0 else self.input_scale * value
            return self.values[index]
        if node.kind == META:
            value = node.call(*self._resolve(node, self.get))
        else:
            steps = max((self._steps_of(i) for i in node.data_args), default=1)
            value = node.op(*self._resolve(node, lambda i: self._at_steps(i, steps)), self.bias, self.ctx)
            self.steps[index] = steps
        for i in node.refs:
            self._read(i)
        self.values[index] = value
        return value

    def _steps_of(self, index: int) -> int:
        self.get(index)
        return self.steps[index]

    def _at_steps(self, index: int, steps: int) -> Any:
        """Node value with ``steps`` time steps: a one-step value of data is repeated."""
        value = self.get(index)
        if steps == 1 or self.steps[index] == steps or self.program.nodes[index].kind not in DATA:
            return value
        return value.unsqueeze(0).expand(steps, *value.shape).reshape(-1, *value.shape[1:])

    @staticmethod
    def _resolve(node: Node, get: Callable[[int], Any]) -> tuple[tuple, dict]:
        resolve = lambda a: get(a.index) if isinstance(a, Ref) else a  # noqa: E731
        return map_aggregate(node.args, resolve), map_aggregate(node.kwargs, resolve)


# --- the per-network cache ------------------------------------------------------------------

_CACHE: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, Program]]" = weakref.WeakKeyDictionary()


def of(net: nn.Module) -> Program:
    """The Program of ``net``, traced on first use and cached until a module of the
    network is added, removed or replaced."""
    if not isinstance(net, nn.Module):
        raise TypeError(f"spikeacc methods run an nn.Module, got {type(net).__name__}")
    fingerprint = tuple((name, id(module)) for name, module in net.named_modules())
    cached = _CACHE.get(net)
    if cached is None or cached[0] != fingerprint:
        cached = (fingerprint, Program(net))
        _CACHE[net] = cached
    return cached[1]
