"""Fused Triton kernels for the neurons' time loops (``lif.py``: multi-step LIF,
``first_spike.py``: the single-spike first crossing).

Which tensors take a kernel is decided by ``mode``:

* ``"cuda"`` (default): CUDA tensors, when triton imports;
* ``"all"``: every device. CPU tensors then run under Triton's interpreter, which needs
  ``TRITON_INTERPRET=1`` in the environment before triton is imported (the tests);
* ``"off"``: never (the loops of ``spikeacc.neurons`` everywhere).

Only float32, float16 and bfloat16 tensors take a kernel (float32 arithmetic inside);
float64 keeps the loops. This package imports triton only when a kernel runs
(``spikeacc.kernels.lif`` and ``first_spike`` import it), so importing spikeacc never
does, and a test can still set ``TRITON_INTERPRET`` first.
"""
from __future__ import annotations

import functools

import torch

MODES = ("cuda", "all", "off")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

mode = "cuda"


def wanted(tensor: torch.Tensor) -> bool:
    """Does ``tensor`` go through a fused kernel under the current ``mode``?"""
    if mode not in MODES:
        raise ValueError(f"spikeacc.kernels.mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "off" or tensor.dtype not in KERNEL_DTYPES:
        return False
    return mode == "all" or (tensor.is_cuda and triton_imports())


@functools.cache
def triton_imports() -> bool:
    """Is triton installed (``pip install spikeacc[triton]``; torch's CUDA wheels bring it)?"""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
