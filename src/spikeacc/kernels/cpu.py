"""The C kernels of ``cpu.c`` for CPU tensors: the LIF window's forward and backward and
SAF's neuron steps, each all steps of a chunk of neurons in one pass over memory.

The library is built on first use with the machine's C compiler (``$CC``, else ``cc`` or
``gcc``; about a second) into a cache directory (``$SPIKEACC_CACHE``, else
``$XDG_CACHE_HOME/spikeacc`` or ``~/.cache/spikeacc``), one file per source, compiler and
CPU, written atomically so that concurrent processes share it. Flags: ``-O3
-ffp-contract=off`` (no fused multiply-add: the forward rounds as PyTorch's operations do),
``-march=native`` and ``-fopenmp`` where the compiler takes them; OpenMP threads follow
``torch.get_num_threads()``. Without a compiler, or if the build fails, ``library()`` is
None after one warning and the callers run their PyTorch loops.

Nothing here is downloaded or needs torch's headers: ctypes passes data pointers of
contiguous tensors.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

SOURCE = Path(__file__).with_name("cpu.c")
FLAGS = ["-O3", "-ffp-contract=off", "-fPIC", "-shared"]
OPTIONAL_FLAGS = [["-march=native", "-fopenmp"], ["-fopenmp"], ["-march=native"], []]  # tried in order
DTYPES = {torch.float32: "f32", torch.float64: "f64"}
RESETS = {"subtract": 0, "subtract_late": 1, "hard": 2, "none": 3}
SURROGATES = {"sigmoid": 0, "atan": 1, "fast_sigmoid": 2, "rect": 3}


class LIFParams(ctypes.Structure):
    """``lif_params`` of cpu.c: a LIF population's constants (neurons.lif.Dynamics)."""

    _fields_ = [(name, ctypes.c_double) for name in ("lam", "gain", "rest", "v_th", "v_reset", "alpha")] + [
        (name, ctypes.c_int32) for name in ("reset", "surrogate", "strict", "detach_reset", "lam_is_one",
                                            "gain_is_one", "rest_is_zero")]


def cache_dir() -> Path:
    """Where built libraries are kept (module docstring)."""
    if os.environ.get("SPIKEACC_CACHE"):
        return Path(os.environ["SPIKEACC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "spikeacc"


def compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _fingerprint(cc: str) -> str:
    """Source, compiler and CPU: a library built for another CPU (-march=native) is not reused."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line for line in lines if line.startswith(("flags", "Features"))), "")
    parts = [SOURCE.read_bytes(), cc.encode(), version.encode(), platform.machine().encode(), cpu.encode(),
             " ".join(FLAGS + [str(OPTIONAL_FLAGS)]).encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def build() -> Path:
    """The library's path, built first if the cache has none (RuntimeError if no flags work)."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    target = cache_dir() / f"spikeacc-cpu-{_fingerprint(cc)}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for optional in OPTIONAL_FLAGS:
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            done = subprocess.run([cc, *FLAGS, *optional, str(SOURCE), "-o", str(built)], capture_output=True,
                                  text=True, timeout=300)
            if done.returncode == 0:
                os.replace(built, target)  # atomic: a concurrent build writes the same bytes
                return target
            errors.append((done.stderr.strip().splitlines() or ["failed"])[-1])
    raise RuntimeError(f"{cc} could not build {SOURCE.name}: {errors[-1]}")


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (with one warning) where they cannot be built."""
    try:
        lib = ctypes.CDLL(str(build()))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"spikeacc: the CPU kernels are not available ({error}); the neuron loops run as "
                      "PyTorch operations (slower, the same results)", RuntimeWarning, stacklevel=2)
        return None
    pointer, i64, i32, f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    params = ctypes.POINTER(LIFParams)
    for suffix in DTYPES.values():
        getattr(lib, f"lif_forward_{suffix}").argtypes = [params, pointer, i64, pointer, pointer, i64, i64, i32]
        getattr(lib, f"lif_backward_{suffix}").argtypes = [params, pointer, pointer, i64, pointer, i64, i64, i32]
        getattr(lib, f"lif_backward_saved_{suffix}").argtypes = [params, pointer, pointer, i64, pointer, i64, i64, i32]
        getattr(lib, f"lif_backward_{suffix}").restype = i32
        getattr(lib, f"saf_steps_{suffix}").argtypes = [pointer, pointer, i64, pointer, i64, i64, pointer, pointer,
                                                        f64, i32, f64, f64, i32, pointer, pointer, pointer, i64, i32]
        getattr(lib, f"saf_last_backward_{suffix}").argtypes = [pointer, pointer, pointer, f64, i32, f64, f64, i32,
                                                                f64, i64, i32]
        getattr(lib, f"pack_bits_{suffix}").argtypes = [pointer, pointer, i64, i32]
        getattr(lib, f"unpack_bits_{suffix}").argtypes = [pointer, pointer, i64, i32]
    return lib


def available(tensor: torch.Tensor) -> bool:
    """Can ``tensor`` (on the CPU, float32 or float64) go through these kernels?"""
    return tensor.device.type == "cpu" and tensor.dtype in DTYPES and library() is not None


def _function(name: str, tensor: torch.Tensor):
    return getattr(library(), f"{name}_{DTYPES[tensor.dtype]}")


def _pointer(tensor: torch.Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


# --- the LIF window ---------------------------------------------------------------------------

def lif_params(dyn) -> LIFParams:
    """cpu.c's constants of ``neurons.lif.Dynamics`` with fixed numbers (``windowed``)."""
    return LIFParams(dyn.lam, dyn.gain, dyn.rest, dyn.v_th, dyn.v_reset, dyn.alpha, RESETS[dyn.reset],
                     SURROGATES[dyn.surrogate], dyn.strict, dyn.detach_reset, dyn.lam == 1.0, dyn.gain == 1.0,
                     dyn.rest == 0.0)


class _LIFWindow(torch.autograd.Function):
    """``neurons.lif._Window`` in two C calls. A current per step [T, B, ...] keeps every
    membrane h (as large as the current, which it replaces); a static input's current
    [1, B, ...] keeps nothing of size T: the backward recomputes h from it, segment by
    segment, in reverse time."""

    @staticmethod
    def forward(ctx, current: torch.Tensor, steps: int, dyn, save: bool) -> torch.Tensor:  # type: ignore[override]
        current = current.contiguous()  # [S, B, ...], S = 1 or steps
        spikes = current.new_empty((steps, *current.shape[1:]))  # [T, B, ...]
        shared = current.shape[0] == 1
        membranes = current.new_empty(spikes.shape) if save and not shared else None  # h, [T, B, ...]
        _function("lif_forward", current)(ctypes.byref(lif_params(dyn)), current.data_ptr(), current.shape[0],
                                          spikes.data_ptr(), _pointer(membranes), steps, current[0].numel(),
                                          torch.get_num_threads())
        if save:
            ctx.save_for_backward(current if shared else membranes)
        ctx.steps, ctx.dyn, ctx.shared = steps, dyn, shared
        return spikes

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_spikes: torch.Tensor):  # type: ignore[override]
        (saved,) = ctx.saved_tensors  # the current [1, B, ...] or the membranes [T, B, ...]
        same = grad_spikes.stride(0) == 0  # the same gradient at every step (a sum over t): one row is read
        grad_spikes = (grad_spikes[:1] if same else grad_spikes).contiguous()  # [T or 1, B, ...]
        grad_current = torch.empty_like(saved)  # [1 or T, B, ...]: a shared current gets the sum over t
        call = ctypes.byref(lif_params(ctx.dyn)), saved.data_ptr(), grad_spikes.data_ptr(), grad_spikes.shape[0]
        size = grad_current.data_ptr(), ctx.steps, saved[0].numel(), torch.get_num_threads()
        if not ctx.shared:
            _function("lif_backward_saved", saved)(*call, *size)
        elif _function("lif_backward", saved)(*call, *size):
            raise MemoryError("spikeacc: the LIF backward could not allocate its scratch memory")
        if ctx.dyn.gain != 1.0:
            grad_current.mul_(ctx.dyn.gain)
        return grad_current, None, None, None


def lif_window(current: torch.Tensor, steps: int, dyn, save: bool) -> torch.Tensor:
    """``neurons.lif.lif_window`` in C: current [S, B, ...] (S = 1 or ``steps``) -> spikes
    [steps, B, ...], the same bit for bit; gradients to rounding (tests/test_lif.py).
    ``save``: keep what the backward needs."""
    return _LIFWindow.apply(current, steps, dyn, save)


# --- SAF's neuron steps -----------------------------------------------------------------------

def _doubles(values: list[float]):
    return (ctypes.c_double * len(values))(*values)


def saf_steps(unit: torch.Tensor, scales: list[float], leaks: list[float], own: int, gain: float, reset: float,
              v_th: float, strict: bool, previous: list[torch.Tensor] | None = None,
              counts: torch.Tensor | None = None, last: torch.Tensor | None = None,
              spikes: torch.Tensor | None = None) -> list[torch.Tensor]:
    """``len(scales)`` SAF steps of the neurons of ``unit`` [B, ...] (cpu.c ``saf_steps``):
    step t fires s = H(g U - reset A_own - V_th) on U = scales[t] unit (methods.saf: a static
    input's U_hat[t] = c[t] (W x + b), or one step's U_hat with scale 1), then A_j =
    leaks[j] A_j + s, from the sums ``previous`` (one per leak; None: no spike yet, A_j = s);
    ``own``: the index of the neuron's own leak; g = ``gain`` (1: no input decay). Returns
    the sums after the last step, new tensors [B, ...]. ``counts`` [B, ...] gains every s;
    ``last`` gets the last step's g U - reset A_own, ``spikes`` (one step) its s (None: not kept)."""
    unit, previous = unit.contiguous(), None if previous is None else [a.contiguous() for a in previous]
    if any(t is not None and not t.is_contiguous() for t in (counts, last, spikes)):
        raise ValueError("saf_steps writes into contiguous tensors")
    sums = [torch.empty_like(unit) for _ in leaks]
    _function("saf_steps", unit)(unit.data_ptr(), _doubles(scales), len(scales), _doubles(leaks), len(leaks), own,
                                 None if previous is None else _pointers(previous), _pointers(sums), gain,
                                 gain == 1.0, reset, v_th, strict, _pointer(counts), _pointer(last), _pointer(spikes),
                                 unit.numel(), torch.get_num_threads())
    return sums


def _pointers(tensors: list[torch.Tensor]):
    return (ctypes.c_void_p * len(tensors))(*(t.data_ptr() for t in tensors))


def saf_last_backward(value: torch.Tensor, grad: torch.Tensor, v_th: float, surrogate: str, alpha: float,
                      gain: float, scale: float) -> torch.Tensor:
    """The gradient into the unit value of the last SAF step (``saf_steps``' ``last`` is its
    fire value x): (sigma'(x - V_th) grad) g scale, each [B, ...]."""
    grad, out = grad.contiguous(), torch.empty_like(value)
    _function("saf_last_backward", value)(value.data_ptr(), grad.data_ptr(), out.data_ptr(), v_th,
                                          SURROGATES[surrogate], alpha, gain, gain == 1.0, scale, value.numel(),
                                          torch.get_num_threads())
    return out


# --- spikes as bits ---------------------------------------------------------------------------

def pack_bits(spikes: torch.Tensor) -> torch.Tensor:
    """0/1 values (any shape) -> uint8 [ceil(numel / 8)], bit k of byte j the element 8 j + k."""
    spikes = spikes.contiguous()
    bits = torch.empty((spikes.numel() + 7) // 8, dtype=torch.uint8)
    _function("pack_bits", spikes)(spikes.data_ptr(), bits.data_ptr(), spikes.numel(), torch.get_num_threads())
    return bits


def unpack_bits(bits: torch.Tensor, out: torch.Tensor, start: int) -> torch.Tensor:
    """Elements start..start+numel-1 (start a multiple of 8) of ``pack_bits``' tensor as 0/1
    values into ``out`` (contiguous), which is returned."""
    if not out.is_contiguous():
        raise ValueError("unpack_bits writes into a contiguous tensor")
    _function("unpack_bits", out)(bits[start // 8:].data_ptr(), out.data_ptr(), out.numel(), torch.get_num_threads())
    return out
