"""Surrogate gradients for the Heaviside spike function.

Forward is always the exact step H(x) (x = u - V_th); backward replaces dH/dx by the
derivative of a smooth primitive. Each surrogate is defined by that primitive and its
closed-form derivative; tests check the closed form against autograd of the primitive.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

SURROGATES = ("sigmoid", "atan", "fast_sigmoid", "rect")


def _sigmoid_primitive(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.sigmoid(alpha * x)


# The derivatives below work in place on one fresh temporary (x itself is never
# modified): each pass over a large [T, B, N] tensor is memory-bound on a CPU.
def _sigmoid_derivative(x: torch.Tensor, alpha: float) -> torch.Tensor:
    sig = torch.mul(x, alpha).sigmoid_()
    return sig.mul_(sig.neg().add_(1.0)).mul_(alpha)  # alpha sig (1 - sig)


def _atan_primitive(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.atan(0.5 * math.pi * alpha * x) / math.pi + 0.5


def _atan_derivative(x: torch.Tensor, alpha: float) -> torch.Tensor:
    scaled = torch.mul(x, 0.5 * math.pi * alpha)
    return scaled.mul_(scaled).add_(1.0).reciprocal_().mul_(0.5 * alpha)  # alpha/2 / (1 + (pi alpha x / 2)^2)


def _fast_sigmoid_primitive(x: torch.Tensor, alpha: float) -> torch.Tensor:
    # SuperSpike / Taylor et al.: derivative 1 / (alpha |x| + 1)^2
    return x / (alpha * x.abs() + 1.0)


def _fast_sigmoid_derivative(x: torch.Tensor, alpha: float) -> torch.Tensor:
    denominator = x.abs().mul_(alpha).add_(1.0)
    return denominator.mul_(denominator).reciprocal_()  # 1 / (alpha |x| + 1)^2


def _rect_primitive(x: torch.Tensor, alpha: float) -> torch.Tensor:
    # straight-through inside a window of width 1/alpha around the threshold
    return torch.clamp(alpha * x + 0.5, 0.0, 1.0)


def _rect_derivative(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return (x.abs() < 0.5 / alpha).to(x.dtype).mul_(alpha)


_TABLE: dict[str, tuple[Callable, Callable]] = {
    "sigmoid": (_sigmoid_primitive, _sigmoid_derivative),
    "atan": (_atan_primitive, _atan_derivative),
    "fast_sigmoid": (_fast_sigmoid_primitive, _fast_sigmoid_derivative),
    "rect": (_rect_primitive, _rect_derivative),
}


def check_surrogate(name: str, alpha: float) -> None:
    if name not in _TABLE:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {', '.join(SURROGATES)}")
    if not alpha > 0:
        raise ValueError(f"surrogate sharpness alpha must be > 0, got {alpha}")


def primitive(name: str, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The smooth function whose derivative the surrogate uses."""
    return _TABLE[name][0](x, alpha)


def derivative(name: str, x: torch.Tensor, alpha: float) -> torch.Tensor:
    """Closed-form surrogate derivative sigma'(x)."""
    return _TABLE[name][1](x, alpha)


class _SpikeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, name: str, alpha: float, strict: bool) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.name, ctx.alpha = name, alpha
        return (x > 0 if strict else x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return derivative(ctx.name, x, ctx.alpha).mul_(grad_out), None, None, None


def state_precision(current: torch.Tensor) -> torch.Tensor:
    """A neuron's input in the precision its state is kept in: float16/bfloat16 currents
    (autocast's products, ``spikeacc train --amp``) are promoted to float32, so membranes
    do not accumulate in 8 bits of mantissa; spikes (0/1) are exact in either."""
    return current.float() if current.dtype in (torch.float16, torch.bfloat16) else current


def fire(v_mem: torch.Tensor, v_th: float | torch.Tensor, name: str = "sigmoid", alpha: float = 4.0,
         strict: bool = False) -> torch.Tensor:
    """s = H(u - V_th) forward (u > V_th with ``strict``, snnTorch's and NIR's rule), the
    surrogate derivative at u - V_th backward (a tensor V_th, e.g. a learnable threshold,
    gets its gradient too). Without a graph, one comparison u >= V_th written straight
    into a float tensor, without autograd's overhead: the same spikes, as for finite
    floats fl(u - V_th) >= 0 exactly when u >= V_th (and > likewise)."""
    graph = torch.is_grad_enabled() and (v_mem.requires_grad or isinstance(v_th, torch.Tensor) and v_th.requires_grad)
    if not graph:
        return (torch.gt if strict else torch.ge)(v_mem, v_th, out=torch.empty_like(v_mem))
    return _SpikeFn.apply(v_mem - v_th, name, alpha, strict)


def spike(x: torch.Tensor, name: str = "sigmoid", alpha: float = 4.0) -> torch.Tensor:
    """H(x) forward, surrogate derivative backward. x = u - V_th."""
    return fire(x, 0.0, name, alpha)
