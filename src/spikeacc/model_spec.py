"""A network as the command line names it (``spikeacc train --model``, ``spikeacc export``).

* a ready-made model (``spikeacc.models.MODELS``), sized by ``--hidden``, with its options
  (``--model-option``, ``spikeacc.models.read_options``);
* ``package.module:function``: the user's builder, called as ``function(sample_shape,
  n_classes)``;
* ``package.module:function(key=value, ...)``: called with those arguments alone (Python
  literals), e.g. SpikingJelly's
  ``spikingjelly.activation_based.model.spiking_vggws_ottt:ottt_spiking_vggws(num_classes=10)``.

The module is imported as ``python -m`` would, the current directory first. A network
holding SpikingJelly or snnTorch modules is converted (``spikeacc.convert``), so training it
trains the original's parameters. Every failure is a ValueError of one line.
"""
from __future__ import annotations

import ast
import importlib
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from torch import nn

from .interop.convert import convert, holds_peer_modules
from .models import build
from .neurons import LIF


def build_network(spec: str, sample_shape: Sequence[int], n_classes: int, hidden: Sequence[int] = (),
                  neuron: LIF | None = None, options: dict[str, object] | None = None) -> nn.Module:
    """The network ``spec`` names (module docstring), for samples of ``sample_shape``;
    ``options``: a ready-made model's options."""
    sample_shape = tuple(sample_shape)
    if ":" not in spec:
        return build(spec, sample_shape, n_classes, neuron, hidden, **(options or {}))
    if hidden:
        raise ValueError(f"--hidden does not apply to a user model ({spec}); its builder sets the sizes")
    if options:
        raise ValueError(f"--model-option applies to the ready-made models; give a user model's arguments in "
                         f"its call, e.g. {spec.partition('(')[0]}(key=value)")
    builder, arguments = _builder(spec)
    net = _call(spec, builder, arguments if arguments is not None else ((sample_shape, n_classes), {}))
    if not isinstance(net, nn.Module):
        raise ValueError(f"model {spec}: the builder returned {type(net).__name__}, not an nn.Module")
    if holds_peer_modules(net):
        net = convert(net)
    if not hasattr(net, "sample_shape"):
        net.sample_shape = sample_shape
    return net


def _builder(spec: str) -> tuple[Callable, tuple[tuple, dict] | None]:
    """The callable ``spec`` names and its own arguments (None: the default call)."""
    module_name, _, call = spec.partition(":")
    name, arguments = _parse_call(spec, call)
    module = _import(spec, module_name)
    builder: Any = module
    for part in name.split("."):
        if not hasattr(builder, part):
            raise ValueError(f"model {spec}: module {module_name!r} has no {name!r}")
        builder = getattr(builder, part)
    if not callable(builder):
        raise ValueError(f"model {spec}: {name!r} is a {type(builder).__name__}, not a function that builds a "
                         "network")
    return builder, arguments


def _parse_call(spec: str, call: str) -> tuple[str, tuple[tuple, dict] | None]:
    """"fn" -> ("fn", None); "fn(3, width=2)" -> ("fn", ((3,), {"width": 2}))."""
    try:
        tree = ast.parse(call.strip(), mode="eval").body
    except SyntaxError:
        raise ValueError(f"model {spec}: {call!r} is neither a name nor a call like fn(key=value)") from None
    if isinstance(tree, ast.Call):
        target, calls = tree.func, True
    else:
        target, calls = tree, False
    name = ast.unparse(target)
    if not all(part.isidentifier() for part in name.split(".")):
        raise ValueError(f"model {spec}: {name!r} is not a name in the module")
    if not calls:
        return name, None
    try:
        args = tuple(ast.literal_eval(arg) for arg in tree.args)
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords if kw.arg is not None}
    except ValueError:
        raise ValueError(f"model {spec}: the arguments must be Python literals (numbers, strings, "
                         "True/False/None, lists, tuples, dicts)") from None
    if len(kwargs) != len(tree.keywords):
        raise ValueError(f"model {spec}: **arguments are not read; name each one")
    return name, (args, kwargs)


def _import(spec: str, module_name: str):
    """The module, found as ``python -m`` finds it: the current directory first."""
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except SyntaxError as err:
        raise ValueError(f"model {spec}: {module_name!r} has a syntax error at {err.filename}:{err.lineno} "
                         f"({err.msg})") from None
    except ImportError as err:
        raise ValueError(f"model {spec}: cannot import {module_name!r} ({err})") from None
    except Exception as err:  # noqa: BLE001  (the module's own code failed while importing)
        raise ValueError(f"model {spec}: importing {module_name!r} raised {_where(err)}") from None
    finally:
        if added:
            sys.path.remove(cwd)


def _call(spec: str, builder: Callable, arguments: tuple[tuple, dict]) -> Any:
    args, kwargs = arguments
    try:
        return builder(*args, **kwargs)
    except Exception as err:  # noqa: BLE001  (the user's builder failed)
        shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        raise ValueError(f"model {spec}: calling it with ({shown}) raised {_where(err)}") from None


def _where(err: BaseException) -> str:
    """'Type: message (at file:line)' of the innermost frame of an exception."""
    frames = traceback.extract_tb(err.__traceback__)
    place = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    message = str(err).strip().splitlines()
    return f"{type(err).__name__}: {message[0] if message else ''}{place}"

