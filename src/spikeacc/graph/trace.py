"""Read a network's dataflow once with torch.fx symbolic tracing.

spikeacc's neuron modules are leaves of the trace (their ``forward`` is never called);
everything else is traced as torch.fx does by default: ``torch.nn`` modules other than
containers become ``call_module`` nodes, user modules are traced through. A trace that
fails (data-dependent Python control flow, a forward that needs concrete values) becomes
a ``GraphError`` naming the module and the source line.
"""
from __future__ import annotations

import linecache
import os
from types import TracebackType

import torch
import torch.fx as fx
from torch import nn

from ..neurons.lif import LIF

NEURON_TYPES: tuple[type[nn.Module], ...] = (LIF,)
_TORCH_DIR = os.path.dirname(torch.__file__)


class GraphError(ValueError):
    """The network cannot be read as a feed-forward spiking graph."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, NEURON_TYPES) or super().is_leaf_module(module, qualified_name)


def trace(net: nn.Module) -> fx.Graph:
    """The fx graph of ``net`` with neurons as leaves; GraphError if it cannot be traced."""
    try:
        graph = _Tracer().trace(net)
    except Exception as err:  # noqa: BLE001  (any failure inside the user's forward)
        raise GraphError(f"cannot read the network's graph: {_where(net, err.__traceback__)}"
                         f"{type(err).__name__}: {_first_line(err)}; spikeacc needs a forward "
                         "without data-dependent Python control flow") from None
    _check_io(graph)
    return graph


def _check_io(graph: fx.Graph) -> None:
    """One tensor input (more only with defaults), one tensor output."""
    required = [n for n in graph.nodes if n.op == "placeholder" and not n.args]
    if len(required) != 1:
        names = ", ".join(n.target for n in required) or "none"
        raise GraphError(f"the network's forward must take exactly one input tensor, takes {names}")
    (output,) = [n for n in graph.nodes if n.op == "output"]
    if not isinstance(output.args[0], fx.Node):
        raise GraphError("the network's forward must return one tensor (the readout), "
                         f"returns {type(output.args[0]).__name__}")


def _where(net: nn.Module, tb: TracebackType | None) -> str:
    """'Class 'name' at file:line (`source`): ' for the innermost frame of the user's
    code (a forward of one of net's modules, outside torch) in a traceback."""
    names = {id(module): name or "<network>" for name, module in net.named_modules()}
    found = ""
    while tb is not None:
        frame, line = tb.tb_frame, tb.tb_lineno
        owner = frame.f_locals.get("self")
        path = frame.f_code.co_filename
        if id(owner) in names and not path.startswith(_TORCH_DIR):
            source = linecache.getline(path, line).strip()
            found = f"{type(owner).__name__} '{names[id(owner)]}' at {path}:{line} (`{source}`): "
        tb = tb.tb_next
    return found


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"
