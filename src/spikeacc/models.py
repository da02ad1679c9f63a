"""One model definition shared by every training method.

A network is a chain of affine *synapses* (Linear or Conv2d, optionally preceded by
parameter-free linear ops such as AvgPool2d or Flatten), each followed by a spiking
neuron, then a non-spiking readout synapse. The network holds only weights and the
neuron's hyperparameters; *how* time is simulated is the method's job
(spikeacc.methods), so one set of weights serves BPTT, OTTT, SR, SAF and the others.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .neurons import LIF


class Synapse(nn.Module):
    """pre-ops (linear, parameter-free) followed by one Linear or Conv2d.

    ``forward(x, bias_scale)`` computes W x + bias_scale * b, which SAF needs to apply
    the accumulated bias c[t] * b with a single product.
    """

    def __init__(self, op: nn.Linear | nn.Conv2d, pre: Sequence[nn.Module] = ()) -> None:
        super().__init__()
        self.pre = nn.Sequential(*pre)
        self.op = op

    @property
    def fan_in(self) -> int:
        """Multiply-accumulates per output element."""
        if isinstance(self.op, nn.Linear):
            return self.op.in_features
        kh, kw = self.op.kernel_size
        return self.op.in_channels // self.op.groups * kh * kw

    def sample_bias(self) -> torch.Tensor | None:
        """b shaped like one output sample ([K] or [C, 1, 1]); None without a bias."""
        bias = self.op.bias
        if bias is None or isinstance(self.op, nn.Linear):
            return bias
        return bias.view(-1, 1, 1)

    def forward(self, x: torch.Tensor, bias_scale: float = 1.0) -> torch.Tensor:
        x = self.pre(x)
        bias = None if self.op.bias is None or bias_scale == 0.0 else self.op.bias * bias_scale
        if isinstance(self.op, nn.Linear):
            return F.linear(x, self.op.weight, bias)
        op = self.op
        return F.conv2d(x, op.weight, bias, op.stride, op.padding, op.dilation, op.groups)


class SpikingNet(nn.Module):
    """hidden synapses (each followed by ``neuron``) and a non-spiking readout synapse.

    ``sample_shape`` is the shape of one input sample (without batch or time).
    """

    def __init__(
        self, hidden: Sequence[Synapse], readout: Synapse, neuron: LIF, sample_shape: tuple[int, ...]
    ) -> None:
        super().__init__()
        self.hidden = nn.ModuleList(hidden)
        self.readout = readout
        self.neuron = neuron
        self.sample_shape = tuple(sample_shape)

    @property
    def n_classes(self) -> int:
        return self.readout.op.out_features

    def extra_repr(self) -> str:
        return f"neuron={self.neuron}, sample_shape={self.sample_shape}"


def MLP(
    in_features: int, hidden: Sequence[int], n_classes: int, neuron: LIF | None = None,
    sample_shape: tuple[int, ...] | None = None,
) -> SpikingNet:
    """Fully connected SNN in_features -> hidden... -> n_classes.

    Inputs may be [B, in_features] or any [B, *shape] with in_features elements per
    sample (flattened); ``sample_shape`` (e.g. (1, 28, 28)) names the shape the data
    comes in, which resolves [T, 1, ...] sequences of batch size 1.
    """
    _check_positive("MLP sizes", [in_features, *hidden, n_classes])
    sample_shape = tuple(sample_shape or (in_features,))
    if math.prod(sample_shape) != in_features:
        raise ValueError(f"MLP sample_shape {sample_shape} does not hold {in_features} features")
    sizes = [in_features, *hidden]
    synapses = [Synapse(nn.Linear(a, b), pre=[nn.Flatten()] if i == 0 else ())
                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    readout = Synapse(nn.Linear(sizes[-1], n_classes), pre=[nn.Flatten()] if not hidden else ())
    return SpikingNet(synapses, readout, neuron or LIF(), sample_shape)


def ConvNet(
    in_shape: tuple[int, int, int] = (1, 28, 28),
    channels: Sequence[int] = (16, 32),
    n_classes: int = 10,
    neuron: LIF | None = None,
) -> SpikingNet:
    """conv3x3 -> LIF -> [avgpool2 -> conv3x3 -> LIF]... -> avgpool2 -> flatten -> linear."""
    c_in, height, width = in_shape
    _check_positive("ConvNet shape and channels", [c_in, height, width, *channels, n_classes])
    if min(height, width) < 2 ** len(channels):
        raise ValueError(f"ConvNet: input {height}x{width} too small for {len(channels)} poolings")
    synapses, prev = [], c_in
    for i, ch in enumerate(channels):
        pre = [nn.AvgPool2d(2)] if i > 0 else []
        synapses.append(Synapse(nn.Conv2d(prev, ch, 3, padding=1), pre=pre))
        prev = ch
    pools = len(channels)
    flat = prev * (height >> pools) * (width >> pools)
    readout = Synapse(nn.Linear(flat, n_classes), pre=[nn.AvgPool2d(2), nn.Flatten()])
    return SpikingNet(synapses, readout, neuron or LIF(), tuple(in_shape))


def _check_positive(what: str, values: Sequence[int]) -> None:
    if any(int(v) != v or v <= 0 for v in values):
        raise ValueError(f"{what} must be positive integers, got {list(values)}")


def _mlp(sample_shape: tuple[int, ...], n_classes: int, neuron: LIF, hidden: Sequence[int]) -> SpikingNet:
    return MLP(math.prod(sample_shape), hidden or (800,), n_classes, neuron, sample_shape)


def _conv(sample_shape: tuple[int, ...], n_classes: int, neuron: LIF, hidden: Sequence[int]) -> SpikingNet:
    if len(sample_shape) != 3:
        raise ValueError(f"model 'conv' needs image samples [C, H, W], got shape {sample_shape}")
    return ConvNet(tuple(sample_shape), tuple(hidden) or (16, 32), n_classes, neuron)


MODELS = {"mlp": _mlp, "conv": _conv}


def build(name: str, sample_shape: tuple[int, ...], n_classes: int, neuron: LIF | None = None,
          hidden: Sequence[int] = ()) -> SpikingNet:
    """Build model ``name`` for samples of ``sample_shape``; ``hidden`` are layer widths
    (MLP) or channels (conv nets), empty for the model's default."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](tuple(sample_shape), n_classes, neuron or LIF(), tuple(hidden))
