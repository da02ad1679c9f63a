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


# Conv nets of the ASF-BP paper (Wu et al., AAAI 2021; authors' code neural-lab/ASF-BP).
# Pooling is AvgPool2d as a pre-op of the next synapse (linear in the spike counts);
# convolutions have no bias, as in the authors' code; weights are He-normal
# N(0, 2 / fan_in) like theirs.

def _he_normal(net: SpikingNet) -> SpikingNet:
    with torch.no_grad():
        for synapse in [*net.hidden, net.readout]:
            synapse.op.weight.normal_(0.0, math.sqrt(2.0 / synapse.fan_in))
            if synapse.op.bias is not None:
                synapse.op.bias.zero_()
    return net


def _conv_stack(c_in: int, stages: Sequence[Sequence[int]], first_pre: Sequence[nn.Module] = (),
                kernel: int = 3) -> tuple[list[Synapse], int]:
    """Bias-free 'same' convolutions; each stage after the first starts with AvgPool2d(2)."""
    synapses, prev = [], c_in
    for s, stage in enumerate(stages):
        for i, ch in enumerate(stage):
            pre = (list(first_pre) if s == 0 else [nn.AvgPool2d(2)]) if i == 0 else []
            synapses.append(Synapse(nn.Conv2d(prev, ch, kernel, padding=kernel // 2, bias=False), pre=pre))
            prev = ch
    return synapses, prev


def _conv_head(synapses: list[Synapse], channels: int, side: tuple[int, int], fc: int,
               n_classes: int, neuron: LIF | None, in_shape: tuple[int, int, int]) -> SpikingNet:
    """avgpool2 -> flatten -> fc -> neuron -> readout, after a conv stack ending at ``side``."""
    height, width = side[0] // 2, side[1] // 2
    if min(height, width) < 1:
        raise ValueError(f"input {in_shape[1]}x{in_shape[2]} too small for this network's poolings")
    synapses.append(Synapse(nn.Linear(channels * height * width, fc), pre=[nn.AvgPool2d(2), nn.Flatten()]))
    return _he_normal(SpikingNet(synapses, Synapse(nn.Linear(fc, n_classes)), neuron or LIF(), in_shape))


def LeNet5(in_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10, neuron: LIF | None = None,
           widths: Sequence[int] = (20, 50, 200)) -> SpikingNet:
    """conv5x5(20) -> [avgpool2] conv5x5(50) -> [avgpool2, flatten] fc(200) -> readout
    (the ASF-BP MNIST network); ``widths`` = (conv1, conv2, fc)."""
    _check_positive("LeNet5 shape and widths", [*in_shape, *widths, n_classes])
    if len(widths) != 3:
        raise ValueError(f"LeNet5 widths are (conv1, conv2, fc), got {list(widths)}")
    synapses, prev = _conv_stack(in_shape[0], [[widths[0]], [widths[1]]], kernel=5)
    side = (in_shape[1] // 2, in_shape[2] // 2)
    return _conv_head(synapses, prev, side, widths[2], n_classes, neuron, tuple(in_shape))


def VGG7(in_shape: tuple[int, int, int] = (3, 32, 32), n_classes: int = 10, neuron: LIF | None = None,
         widths: Sequence[int] = (64, 64, 128, 128, 128, 1024)) -> SpikingNet:
    """conv3x3 64, 64 -> [avgpool2] conv3x3 128, 128, 128 -> [avgpool2, flatten] fc(1024)
    -> readout (the ASF-BP CIFAR-10 network, bias-free convolutions; the authors' code
    max-pools the second time, here both poolings average)."""
    _check_positive("VGG7 shape and widths", [*in_shape, *widths, n_classes])
    if len(widths) != 6:
        raise ValueError(f"VGG7 widths are (conv1..conv5, fc), got {list(widths)}")
    synapses, prev = _conv_stack(in_shape[0], [widths[:2], widths[2:5]])
    side = (in_shape[1] // 2, in_shape[2] // 2)
    return _conv_head(synapses, prev, side, widths[5], n_classes, neuron, tuple(in_shape))


def DVSConvNet(in_shape: tuple[int, int, int] = (2, 128, 128), n_classes: int = 10,
               neuron: LIF | None = None, widths: Sequence[int] = (32, 64, 128, 256),
               input_pool: int | None = None) -> SpikingNet:
    """Event frames: [avgpool input_pool] conv3x3 32 -> [avgpool2] conv3x3 64 -> [avgpool2]
    conv3x3 128 -> [avgpool2, flatten] fc(256) -> readout. ``input_pool`` (default
    max(1, H // 32)) averages the input frames down to at most ~32x32 first;
    ``widths`` = (conv channels..., fc)."""
    _check_positive("DVSConvNet shape and widths", [*in_shape, *widths, n_classes])
    if len(widths) < 2:
        raise ValueError(f"DVSConvNet widths are (conv channels..., fc), got {list(widths)}")
    pool = max(1, in_shape[1] // 32) if input_pool is None else input_pool
    _check_positive("DVSConvNet input_pool", [pool])
    first_pre = [nn.AvgPool2d(pool)] if pool > 1 else []
    synapses, prev = _conv_stack(in_shape[0], [[ch] for ch in widths[:-1]], first_pre)
    shrink = pool * 2 ** (len(widths) - 2)
    side = (in_shape[1] // shrink, in_shape[2] // shrink)
    return _conv_head(synapses, prev, side, widths[-1], n_classes, neuron, tuple(in_shape))


def _image_model(name: str, factory):
    def build_model(sample_shape: tuple[int, ...], n_classes: int, neuron: LIF, hidden: Sequence[int]) -> SpikingNet:
        if len(sample_shape) != 3:
            raise ValueError(f"model {name!r} needs image samples [C, H, W], got shape {sample_shape}")
        return factory(tuple(sample_shape), n_classes, neuron, *([tuple(hidden)] if hidden else []))
    return build_model


MODELS.update({"lenet5": _image_model("lenet5", LeNet5), "vgg7": _image_model("vgg7", VGG7),
               "dvs-conv": _image_model("dvs-conv", DVSConvNet)})
