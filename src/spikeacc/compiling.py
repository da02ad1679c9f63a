"""torch.compile for the methods' neuron dynamics (``methods.get(name, T, compile=True)``,
``spikeacc train --compile``).

What is compiled: the pure tensor functions that hold a method's element-wise work, the
multi-step LIF window's forward and backward loops (BPTT, spiking inference), the one-step LIF and SAF neuron updates
(OTTT, SAF), the IF loop (ASF-BP) and the single-spike layer; the products stay
PyTorch's (they are library calls either way). torch.compile fuses each function's
element-wise ops into one kernel (inductor: C++ on the CPU, Triton on CUDA), compiled
once per input shape and cached by torch. A function that fails to compile warns once and
runs eagerly from then on.

``BACKEND`` is torch.compile's backend ("inductor"; the tests use "aot_eager", which
captures the same graphs without generating code).
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Callable

import torch

BACKEND = os.environ.get("SPIKEACC_COMPILE_BACKEND", "inductor")


class _Compiled:
    """``fn`` under torch.compile, falling back to ``fn`` (with one warning) if compiling fails."""

    def __init__(self, fn: Callable, backend: str | Callable | None = None) -> None:
        self.fn, self.failed = fn, False
        self.compiled = torch.compile(fn, backend=backend or BACKEND, dynamic=False)
        functools.update_wrapper(self, fn)

    def __call__(self, *args, **kwargs):
        if self.failed:
            return self.fn(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as err:  # noqa: BLE001  (any compiler failure: run eagerly)
            self.failed = True
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            warnings.warn(f"spikeacc: torch.compile of {self.fn.__qualname__} failed ({reason}); "
                          "running it eagerly", RuntimeWarning, stacklevel=2)
            return self.fn(*args, **kwargs)


@functools.cache
def compiled(fn: Callable) -> Callable:
    """The compiled version of ``fn`` (one per function)."""
    return _Compiled(fn)


def maybe(fn: Callable, enabled: bool) -> Callable:
    """``compiled(fn)`` if ``enabled``, else ``fn``."""
    return compiled(fn) if enabled else fn
