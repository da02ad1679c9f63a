"""Surrogate derivatives sigma'(x) inside Triton kernels, x = u - V_th in float32.

The same closed forms as ``spikeacc.neurons.surrogate`` (one branch per name, picked
when the kernel is compiled); tests/test_triton_kernels.py checks each against
``spikeacc.neurons.surrogate.derivative`` through the LIF kernel's backward at T = 1.
"""
import math

import triton
import triton.language as tl

HALF_PI: tl.constexpr = tl.constexpr(0.5 * math.pi)


@triton.jit
def surrogate_derivative(x, alpha, NAME: tl.constexpr):
    """sigma'(x) for x [BLOCK] float32 and the sharpness alpha: float32 [BLOCK].

    sigmoid       alpha sig(alpha x) (1 - sig(alpha x))
    atan          (alpha / 2) / (1 + (pi alpha x / 2)^2)
    fast_sigmoid  1 / (alpha |x| + 1)^2
    rect          alpha 1[|x| < 1 / (2 alpha)]
    """
    if NAME == "sigmoid":
        sig = tl.sigmoid(alpha * x)
        derivative = alpha * sig * (1.0 - sig)
    elif NAME == "atan":
        scaled = x * (alpha * HALF_PI)
        derivative = 0.5 * alpha / (1.0 + scaled * scaled)
    elif NAME == "fast_sigmoid":
        denominator = alpha * tl.abs(x) + 1.0
        derivative = 1.0 / (denominator * denominator)
    else:
        tl.static_assert(NAME == "rect", "unknown surrogate")
        derivative = tl.where(tl.abs(x) < 0.5 / alpha, alpha, 0.0)
    return derivative.to(tl.float32)
