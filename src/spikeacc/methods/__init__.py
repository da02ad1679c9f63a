"""Training methods, one file each; ``get(name, T=...)`` builds one by name."""
from __future__ import annotations

from typing import Callable

from .asf import ASF
from .base import Inference, Method, spiking_inference
from .bptt import BPTT
from .ottt import OTTT
from .saf import SAFE, SAFF
from .sr import SpikeRepresentation
from .single_spike import SingleSpike

# methods whose network is the LIF network of base.py (its spikes are what they train)
LIF_METHODS = (BPTT, OTTT, SAFE, SAFF, SpikeRepresentation)

_REGISTRY: dict[str, Callable[..., Method]] = {
    "bptt": BPTT,
    "ottt-o": lambda T, **kw: OTTT(T, variant="o", **kw),
    "ottt-a": lambda T, **kw: OTTT(T, variant="a", **kw),
    "sr": SpikeRepresentation,
    "saf-e": SAFE,
    "saf-f": SAFF,
    "asf": ASF,
    "single-spike": SingleSpike,
}


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str, T: int, static_once: bool = True, compile: bool = False, **options) -> Method:
    """Build the method ``name`` for T time steps (ValueError for an unknown name).

    ``static_once=False`` evaluates the ops that read only a static input at every step,
    as the papers' per-step algorithms do (the same results; the benchmarks count the
    per-step MACs with it). ``compile=True`` runs the neuron dynamics under torch.compile
    (``spikeacc.compiling``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_REGISTRY)}")
    try:
        method = _REGISTRY[name](T=T, **options)
    except TypeError as err:  # an option the method does not take
        raise ValueError(f"method {name!r}: {err}") from None
    method.static_once, method.compile = bool(static_once), bool(compile)
    return method


__all__ = ["BPTT", "LIF_METHODS", "OTTT", "SAFE", "SAFF", "Inference", "Method", "SpikeRepresentation",
           "get", "names", "spiking_inference"]
