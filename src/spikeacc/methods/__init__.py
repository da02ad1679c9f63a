"""Training methods, one file each; ``get(name, T=...)`` builds one by name."""
from __future__ import annotations

from typing import Iterable

from ..typed_options import declared_types, read_options as read_declared
from .asf import ASF
from .base import Inference, Method, spiking_inference
from .blocks import Blocks
from .bptt import BPTT
from .ottt import OTTT
from .saf import SAFE, SAFF
from .sr import SpikeRepresentation
from .single_spike import SingleSpike

# methods whose network is the LIF network of base.py (its spikes are what they train)
LIF_METHODS = (BPTT, OTTT, SAFE, SAFF, SpikeRepresentation)

# name -> (class, the constructor's keywords the name fixes)
_REGISTRY: dict[str, tuple[type[Method], dict[str, object]]] = {
    "bptt": (BPTT, {}),
    "ottt-o": (OTTT, {"variant": "o"}),
    "ottt-a": (OTTT, {"variant": "a"}),
    "sr": (SpikeRepresentation, {}),
    "saf-e": (SAFE, {}),
    "saf-f": (SAFF, {}),
    "asf": (ASF, {}),
    "single-spike": (SingleSpike, {}),
    "blocks": (Blocks, {}),
}


def names() -> list[str]:
    return list(_REGISTRY)


def _entry(name: str) -> tuple[type[Method], dict[str, object]]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def read_options(name: str, options: Iterable[tuple[str, object]]) -> dict[str, object]:
    """The options of method ``name`` (its constructor's keywords and ``static_once``), each
    value read as the type declared for it (text included: "off" is False); ValueError for
    an unknown method, an option it does not take or a value not of the option's type."""
    method_class, fixed = _entry(name)
    declared = {**declared_types(method_class, skip=("T", *fixed)), "static_once": bool}
    return read_declared(declared, options, f"method {name!r}")


def get(name: str, T: int, static_once: bool = True, compile: bool = False, **options) -> Method:
    """Build the method ``name`` for T time steps (ValueError for an unknown name).

    ``static_once=False`` evaluates the ops that read only a static input at every step,
    as the papers' per-step algorithms do (the same results; the benchmarks count the
    per-step MACs with it). ``compile=True`` runs the neuron dynamics under torch.compile
    (``spikeacc.compiling``). ``options`` are read by ``read_options``."""
    method_class, fixed = _entry(name)
    read = read_options(name, [("static_once", static_once), *options.items()])
    static_once = read.pop("static_once")
    method = method_class(T=T, **fixed, **read)
    method.static_once, method.compile = static_once, bool(compile)
    return method


__all__ = ["BPTT", "Blocks", "LIF_METHODS", "OTTT", "SAFE", "SAFF", "Inference", "Method", "SpikeRepresentation",
           "get", "names", "read_options", "spiking_inference"]
