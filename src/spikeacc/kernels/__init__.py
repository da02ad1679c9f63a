"""Fused kernels for the neurons' time loops: Triton kernels for CUDA tensors (``lif.py``:
multi-step LIF, ``first_spike.py``: the single-spike first crossing, ``saf.py``: SAF's
neuron steps) and C kernels for CPU tensors (``cpu.py``, ``cpu.c``: the LIF window, SAF's
neuron steps, spikes as bits).

Which tensors take a kernel is decided by ``mode``:

* ``"auto"`` (default): CUDA tensors take the Triton kernels, when triton imports; CPU
  float32 and float64 tensors take the C kernels, when a C compiler builds them;
* ``"cuda"``: the Triton kernels on CUDA tensors, no C kernels (the PyTorch loops on CPU);
* ``"all"``: the Triton kernels on every device. CPU tensors then run under Triton's
  interpreter, which needs ``TRITON_INTERPRET=1`` in the environment before triton is
  imported (the tests);
* ``"off"``: never (the loops of ``spikeacc.neurons`` everywhere).

Only float32, float16 and bfloat16 tensors take a Triton kernel (float32 arithmetic
inside); float64 keeps the loops there. This package imports triton only when a kernel
runs (``spikeacc.kernels.lif`` and ``first_spike`` import it), so importing spikeacc never
does, and a test can still set ``TRITON_INTERPRET`` first; the C kernels are built on
their first use (``cpu.library``).
"""
from __future__ import annotations

import functools

import torch

from . import cpu

MODES = ("auto", "cuda", "all", "off")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

mode = "auto"


def _checked_mode() -> str:
    if mode not in MODES:
        raise ValueError(f"spikeacc.kernels.mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def wanted(tensor: torch.Tensor) -> bool:
    """Does ``tensor`` go through a Triton kernel under the current ``mode``?"""
    if _checked_mode() == "off" or tensor.dtype not in KERNEL_DTYPES:
        return False
    return mode == "all" or (tensor.is_cuda and triton_imports())


def native(tensor: torch.Tensor) -> bool:
    """Does ``tensor`` go through a C kernel (``cpu.py``) under the current ``mode``?"""
    return _checked_mode() == "auto" and cpu.available(tensor)


def saf_fused(tensor: torch.Tensor) -> bool:
    """Do SAF's neuron steps on ``tensor`` run in a kernel: C (float32, float64) or Triton
    (float32, ``saf.py``)?"""
    return native(tensor) or (tensor.dtype == torch.float32 and wanted(tensor))


def saf_steps(unit: torch.Tensor, *args, **kwargs) -> list[torch.Tensor]:
    """``cpu.saf_steps`` or its Triton twin ``saf.saf_steps``, whichever takes ``unit``
    (``saf_fused``)."""
    if native(unit):
        return cpu.saf_steps(unit, *args, **kwargs)
    from .saf import saf_steps as triton_saf_steps  # imports triton: only once a kernel runs
    return triton_saf_steps(unit, *args, **kwargs)


@functools.cache
def triton_imports() -> bool:
    """Is triton installed (``pip install spikeacc[triton]``; torch's CUDA wheels bring it)?"""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
