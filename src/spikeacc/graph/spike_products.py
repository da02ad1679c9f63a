"""Products whose input is spikes (0/1 values): a Linear or conv module that reads a
neuron site directly keeps that input as bits for its backward, 1/32 of the float32
spikes (methods.base.lif_forward asks for it, under BPTT). The forward is the module's
own; the input's gradient needs only the weight; the weight's gradient unpacks the bits a
chunk of samples at a time, so the float spikes of the whole window never exist again
(the same gradients up to the order of the chunked sums: tests/test_spike_products.py).

Bits: element 8 j + k of the flattened input is bit k of byte j (numpy's packbits with
bitorder "little"), packed in C on CPU tensors (``kernels.cpu``) and by tensor operations
elsewhere.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels

CHUNK_BYTES = 1 << 19  # unpacked input per chunk of the weight gradient (a multiple of 8)
_BIT = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack(spikes: torch.Tensor) -> torch.Tensor:
    """0/1 values of any shape -> uint8 [ceil(numel / 8)] (tensor operations: a chunk of
    CHUNK_BYTES elements at a time, so that their temporaries stay small)."""
    if kernels.native(spikes):
        return kernels.cpu.pack_bits(spikes)
    flat = spikes.reshape(-1)
    bits = torch.empty((flat.numel() + 7) // 8, dtype=torch.uint8, device=flat.device)
    for start in range(0, flat.numel(), CHUNK_BYTES):
        part = flat[start:start + CHUNK_BYTES]
        eights = F.pad(part, (0, -part.numel() % 8)).to(torch.uint8).view(-1, 8)  # [bytes, 8]
        bits[start // 8:start // 8 + eights.shape[0]] = (eights * _BIT.to(flat.device)).sum(1, dtype=torch.uint8)
    return bits


def unpack(bits: torch.Tensor, out: torch.Tensor, start: int) -> torch.Tensor:
    """Elements start..start+numel-1 (start a multiple of 8) as 0/1 values into ``out``
    (contiguous, any float type), which is returned."""
    if kernels.native(out):
        return kernels.cpu.unpack_bits(bits, out, start)
    part = bits[start // 8:(start + out.numel() + 7) // 8]
    values = (part.unsqueeze(1) & _BIT.to(part.device)) != 0  # [bytes, 8]
    return out.copy_(values.reshape(-1)[:out.numel()].view(out.shape))


def chunked_sum(bits: torch.Tensor, samples: int, sample_shape: tuple[int, ...], like: torch.Tensor,
                term: Callable[[int, int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """sum over chunks of samples of term(first, count, x[first:first + count]), x the
    packed spikes [samples, *sample_shape] unpacked a chunk at a time into one buffer of
    about CHUNK_BYTES (``like``'s dtype; chunks of a multiple of 8 samples start on a byte)."""
    sample = math.prod(sample_shape)
    step = max(8, CHUNK_BYTES // max(1, sample * like.element_size()) // 8 * 8)
    buffer = like.new_empty(min(step, samples) * sample)
    total = None
    for first in range(0, samples, step):
        count = min(step, samples - first)
        part = term(first, count, unpack(bits, buffer[:count * sample], first * sample).view(count, *sample_shape))
        total = part if total is None else total.add_(part)
    return total


class _SpikeLinear(torch.autograd.Function):
    """F.linear(x, W, b) of spikes x [..., K], saving x as bits. Backward, with g = dL/dout:
    dL/dx = g W, dL/dW = sum over chunks of rows g_c^T x_c, dL/db = sum of g over rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor,  # type: ignore[override]
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(pack(x), weight)
        ctx.shape, ctx.x_dtype = x.shape, x.dtype
        return F.linear(x, weight, bias)  # under autocast in its precision, as the module

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        bits, weight = ctx.saved_tensors
        features, product = ctx.shape[-1], weight.to(grad.dtype)  # autocast: the products' precision
        grad_rows = grad.reshape(-1, grad.shape[-1])  # [rows, out]
        grad_weight = None
        if ctx.needs_input_grad[1]:  # first: its chunks are freed before dL/dx exists
            grad_weight = chunked_sum(bits, grad_rows.shape[0], (features,), grad, lambda first, rows, x_part: (
                grad_rows[first:first + rows].t() @ x_part)).to(weight.dtype)
        grad_bias = grad_rows.sum(0) if ctx.needs_input_grad[2] else None
        grad_x = (grad_rows @ product).view(ctx.shape).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        return grad_x, grad_weight, grad_bias


_CONV_GRADS = {1: (torch.nn.grad.conv1d_input, torch.nn.grad.conv1d_weight),
               2: (torch.nn.grad.conv2d_input, torch.nn.grad.conv2d_weight),
               3: (torch.nn.grad.conv3d_input, torch.nn.grad.conv3d_weight)}


class _SpikeConv(torch.autograd.Function):
    """A conv module (numeric zero padding) of spikes x [N, C, ...], saving x as bits.
    Backward: dL/dx from the weight alone, dL/dW summed over chunks of samples, dL/db over
    everything but the channels (``torch.nn.grad``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                module: nn.Module) -> torch.Tensor:
        ctx.save_for_backward(pack(x), weight)
        ctx.shape, ctx.x_dtype, ctx.module = x.shape, x.dtype, module
        return module._conv_forward(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        bits, weight = ctx.saved_tensors
        m, shape, product = ctx.module, ctx.shape, weight.to(grad.dtype)  # autocast: the products' precision
        grad_input, grad_of_weight = _CONV_GRADS[len(shape) - 2]
        settings = (m.stride, m.padding, m.dilation, m.groups)
        grad_weight = None
        if ctx.needs_input_grad[1]:  # first: its chunks are freed before dL/dx exists
            grad_weight = chunked_sum(bits, shape[0], shape[1:], grad, lambda first, count, x_part: grad_of_weight(
                x_part, weight.shape, grad[first:first + count], *settings)).to(weight.dtype)
        grad_bias = grad.sum([d for d in range(grad.dim()) if d != 1]) if ctx.needs_input_grad[2] else None
        grad_x = grad_input(shape, product, grad, *settings).to(ctx.x_dtype) if ctx.needs_input_grad[0] else None
        return grad_x, grad_weight, grad_bias, None


def spike_product(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for spikes x, keeping x as bits (a Linear, or a conv with zero padding;
    other modules run as they are)."""
    if isinstance(module, nn.Linear):
        return _SpikeLinear.apply(x, module.weight, module.bias)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.padding_mode == "zeros" \
            and not isinstance(module.padding, str):
        return _SpikeConv.apply(x, module.weight, module.bias, module)
    return module(x)
