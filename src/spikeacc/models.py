"""Ready-made spiking networks: ordinary ``nn.Module``s with ``spikeacc.LIF`` where
neurons fire.

A network holds only weights and its neurons' hyperparameters; *how* time is simulated
is the method's job (spikeacc.methods reads the network's graph), so one set of weights
serves BPTT, OTTT, SR, SAF and the others. Whatever follows the last neuron is the
non-spiking readout. Every builder takes ``neuron``, a LIF whose settings each neuron
position copies (each position gets its own LIF, so they can be changed one by one), and
records ``sample_shape``, the shape of one input sample, which tells a static batch
[B, ...] from a sequence [T, B, ...] when B == T. A builder's keywords beyond the sizes are
its options (``spikeacc train --model-option KEY=VALUE``, ``read_options``), among them
the authors' conventions: ``zero_bias`` of the MLP (the single-spike authors' code starts
every bias at zero) and ``fc_bias`` of the ASF-BP networks (their fully connected layers
have no bias).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .layers import Scale, ScaledWSConv2d
from .neurons import LIF
from .typed_options import declared_types, read_options as read_declared


def _neurons(template: LIF | None) -> Callable[[], LIF]:
    """A factory of neurons with the template's class and settings (default LIF())."""
    template = template or LIF()
    settings = template.settings()
    return lambda: type(template)(**settings)


def _sequential(layers: Sequence[nn.Module], sample_shape: Sequence[int]) -> nn.Sequential:
    net = nn.Sequential(*layers)
    net.sample_shape = tuple(sample_shape)
    return net


def _check_positive(what: str, values: Sequence[int]) -> None:
    if any(int(v) != v or v <= 0 for v in values):
        raise ValueError(f"{what} must be positive integers, got {list(values)}")


def MLP(in_features: int, hidden: Sequence[int], n_classes: int, neuron: LIF | None = None,
        sample_shape: tuple[int, ...] | None = None, zero_bias: bool = False) -> nn.Sequential:
    """Flatten -> [Linear -> LIF]... -> Linear: in_features -> hidden... -> n_classes.

    Inputs may be [B, in_features] or any [B, *shape] with in_features elements per
    sample; ``sample_shape`` (e.g. (1, 28, 28)) names the shape the data comes in.
    Weights and biases start as PyTorch's Linear starts them, U(-1/sqrt(fan_in),
    1/sqrt(fan_in)); with ``zero_bias`` the biases start at 0, as in the single-spike
    authors' code (their weights are drawn from the same uniform).
    """
    _check_positive("MLP sizes", [in_features, *hidden, n_classes])
    sample_shape = tuple(sample_shape or (in_features,))
    if math.prod(sample_shape) != in_features:
        raise ValueError(f"MLP sample_shape {sample_shape} does not hold {in_features} features")
    new_neuron, sizes = _neurons(neuron), [in_features, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), new_neuron()]
    net = _sequential([*layers, nn.Linear(sizes[-1], n_classes)], sample_shape)
    if zero_bias:
        with torch.no_grad():
            for layer in net:
                if isinstance(layer, nn.Linear):
                    layer.bias.zero_()
    return net


def ConvNet(in_shape: tuple[int, int, int] = (1, 28, 28), channels: Sequence[int] = (16, 32),
            n_classes: int = 10, neuron: LIF | None = None) -> nn.Sequential:
    """conv3x3 -> LIF -> [avgpool2 -> conv3x3 -> LIF]... -> avgpool2 -> flatten -> linear."""
    c_in, height, width = in_shape
    _check_positive("ConvNet shape and channels", [c_in, height, width, *channels, n_classes])
    if min(height, width) < 2 ** len(channels):
        raise ValueError(f"ConvNet: input {height}x{width} too small for {len(channels)} poolings")
    new_neuron, layers, prev = _neurons(neuron), [], c_in
    for i, ch in enumerate(channels):
        layers += ([nn.AvgPool2d(2)] if i else []) + [nn.Conv2d(prev, ch, 3, padding=1), new_neuron()]
        prev = ch
    flat = prev * (height >> len(channels)) * (width >> len(channels))
    return _sequential([*layers, nn.AvgPool2d(2), nn.Flatten(), nn.Linear(flat, n_classes)], in_shape)


# --- the ASF-BP paper's networks (Wu et al., AAAI 2021; authors' code neural-lab/ASF-BP) -----
# Convolutions have no bias and weights are He-normal N(0, 2 / fan_in), as in the
# authors' code; pooling is average pooling (linear in the spike counts). The fully
# connected layers have biases (starting at 0) unless ``fc_bias=False``: the authors'
# networks have none.

def _he_normal(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                module.weight.normal_(0.0, math.sqrt(2.0 / module.weight[0].numel()))
                if module.bias is not None:
                    module.bias.zero_()
    return net


def _conv_stack(c_in: int, stages: Sequence[Sequence[int]], new_neuron: Callable[[], LIF],
                first: Sequence[nn.Module] = (), kernel: int = 3) -> tuple[list[nn.Module], int]:
    """Bias-free 'same' convolutions, each followed by a neuron; every stage after the
    first starts with AvgPool2d(2). ``first``: ops before the first convolution."""
    layers, prev = list(first), c_in
    for s, stage in enumerate(stages):
        layers += [nn.AvgPool2d(2)] if s else []
        for ch in stage:
            layers += [nn.Conv2d(prev, ch, kernel, padding=kernel // 2, bias=False), new_neuron()]
            prev = ch
    return layers, prev


def _conv_head(layers: list[nn.Module], channels: int, side: tuple[int, int], fc: int, n_classes: int,
               new_neuron: Callable[[], LIF], in_shape: tuple[int, int, int], fc_bias: bool) -> nn.Sequential:
    """avgpool2 -> flatten -> fc -> neuron -> readout, after a conv stack ending at ``side``."""
    height, width = side[0] // 2, side[1] // 2
    if min(height, width) < 1:
        raise ValueError(f"input {in_shape[1]}x{in_shape[2]} too small for this network's poolings")
    head = [nn.AvgPool2d(2), nn.Flatten(), nn.Linear(channels * height * width, fc, bias=fc_bias), new_neuron(),
            nn.Linear(fc, n_classes, bias=fc_bias)]
    return _he_normal(_sequential([*layers, *head], in_shape))


def LeNet5(in_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10, neuron: LIF | None = None,
           widths: Sequence[int] = (20, 50, 200), fc_bias: bool = True) -> nn.Sequential:
    """conv5x5(20) -> avgpool2 -> conv5x5(50) -> avgpool2 -> flatten -> fc(200) -> readout
    (the ASF-BP MNIST network); ``widths`` = (conv1, conv2, fc); ``fc_bias=False``: no
    bias anywhere, as in the authors' code."""
    _check_positive("LeNet5 shape and widths", [*in_shape, *widths, n_classes])
    if len(widths) != 3:
        raise ValueError(f"LeNet5 widths are (conv1, conv2, fc), got {list(widths)}")
    new_neuron = _neurons(neuron)
    layers, prev = _conv_stack(in_shape[0], [[widths[0]], [widths[1]]], new_neuron, kernel=5)
    side = (in_shape[1] // 2, in_shape[2] // 2)
    return _conv_head(layers, prev, side, widths[2], n_classes, new_neuron, tuple(in_shape), fc_bias)


def VGG7(in_shape: tuple[int, int, int] = (3, 32, 32), n_classes: int = 10, neuron: LIF | None = None,
         widths: Sequence[int] = (64, 64, 128, 128, 128, 1024), fc_bias: bool = True) -> nn.Sequential:
    """conv3x3 64, 64 -> avgpool2 -> conv3x3 128, 128, 128 -> avgpool2 -> flatten -> fc(1024)
    -> readout (the ASF-BP CIFAR-10 network, bias-free convolutions; the authors' code
    max-pools the second time, here both poolings average); ``fc_bias=False``: no bias
    anywhere, as in the authors' code."""
    _check_positive("VGG7 shape and widths", [*in_shape, *widths, n_classes])
    if len(widths) != 6:
        raise ValueError(f"VGG7 widths are (conv1..conv5, fc), got {list(widths)}")
    new_neuron = _neurons(neuron)
    layers, prev = _conv_stack(in_shape[0], [widths[:2], widths[2:5]], new_neuron)
    side = (in_shape[1] // 2, in_shape[2] // 2)
    return _conv_head(layers, prev, side, widths[5], n_classes, new_neuron, tuple(in_shape), fc_bias)


def DVSConvNet(in_shape: tuple[int, int, int] = (2, 128, 128), n_classes: int = 10,
               neuron: LIF | None = None, widths: Sequence[int] = (32, 64, 128, 256),
               input_pool: int | None = None, fc_bias: bool = True) -> nn.Sequential:
    """Event frames: [avgpool input_pool] conv3x3 32 -> avgpool2 -> conv3x3 64 -> avgpool2
    -> conv3x3 128 -> avgpool2 -> flatten -> fc(256) -> readout. ``input_pool`` (default
    max(1, H // 32)) averages the input frames down to at most ~32x32 first;
    ``widths`` = (conv channels..., fc); ``fc_bias=False``: no bias anywhere, as in the
    ASF-BP authors' CIFAR10-DVS code."""
    _check_positive("DVSConvNet shape and widths", [*in_shape, *widths, n_classes])
    if len(widths) < 2:
        raise ValueError(f"DVSConvNet widths are (conv channels..., fc), got {list(widths)}")
    pool = max(1, in_shape[1] // 32) if input_pool is None else input_pool
    _check_positive("DVSConvNet input_pool", [pool])
    new_neuron = _neurons(neuron)
    first = [nn.AvgPool2d(pool)] if pool > 1 else []
    layers, prev = _conv_stack(in_shape[0], [[ch] for ch in widths[:-1]], new_neuron, first)
    shrink = pool * 2 ** (len(widths) - 2)
    side = (in_shape[1] // shrink, in_shape[2] // shrink)
    return _conv_head(layers, prev, side, widths[-1], n_classes, new_neuron, tuple(in_shape), fc_bias)


# --- the OTTT / SAF papers' CIFAR network and a small spiking ResNet --------------------------

SPIKE_SCALE = 2.74  # OTTT's code multiplies every neuron's spikes by this (with sWS weights)


def _ws_init(net: nn.Module) -> nn.Module:
    """OTTT's initialisation: convs Kaiming-normal (fan_out, ReLU gain), Linear N(0, 0.01),
    biases 0."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                module.weight.normal_(0.0, 0.01)
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.zero_()
    return net


def VGGsWS(in_shape: tuple[int, int, int] = (3, 32, 32), n_classes: int = 10, neuron: LIF | None = None,
           widths: Sequence[int] = (64, 128, 256, 256, 512, 512, 512, 512)) -> nn.Sequential:
    """The OTTT paper's CIFAR network (VGG-11 with scaled weight standardisation, used by
    SAF too; authors' code ``online_spiking_vgg11_ws``): per width a 3x3 sWS conv ->
    LIF -> x2.74, average pooling 2 after the 2nd, 4th and 6th conv (every second conv
    but the last pair), then global average pooling -> flatten -> Linear."""
    _check_positive("VGGsWS shape and widths", [*in_shape, *widths, n_classes])
    pools = range(2, len(widths) - 1, 2)  # after conv 2, 4, 6 of 8
    if min(in_shape[1:]) < 2 ** len(pools):
        raise ValueError(f"VGGsWS: input {in_shape[1]}x{in_shape[2]} too small for {len(pools)} poolings")
    new_neuron, layers, prev = _neurons(neuron), [], in_shape[0]
    for i, ch in enumerate(widths, 1):
        layers += [ScaledWSConv2d(prev, ch, 3, padding=1), new_neuron(), Scale(SPIKE_SCALE)]
        layers += [nn.AvgPool2d(2)] if i in pools else []
        prev = ch
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(prev, n_classes)]
    return _ws_init(_sequential([*layers, *head], in_shape))


class SpikingBasicBlock(nn.Module):
    """Residual block on scaled spikes s: out = 2.74 * LIF(conv2(2.74 * LIF(conv1(s))) + shortcut(s)),
    sWS 3x3 convolutions; the shortcut is the identity, or avgpool(stride) -> sWS 1x1 conv
    where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, new_neuron: Callable[[], LIF]) -> None:
        super().__init__()
        self.conv1 = ScaledWSConv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.lif1 = new_neuron()
        self.conv2 = ScaledWSConv2d(c_out, c_out, 3, padding=1)
        self.lif2 = new_neuron()
        self.scale = Scale(SPIKE_SCALE)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.AvgPool2d(stride) if stride > 1 else nn.Identity(), ScaledWSConv2d(c_in, c_out, 1))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        h = self.scale(self.lif1(self.conv1(s)))
        return self.scale(self.lif2(self.conv2(h) + self.shortcut(s)))


class SpikingResNet(nn.Module):
    """stem (sWS conv3x3 -> LIF -> x2.74) -> one SpikingBasicBlock per width (stride 2 from
    the second) -> global average pooling -> Linear."""

    def __init__(self, in_shape: tuple[int, int, int] = (3, 32, 32), n_classes: int = 10,
                 neuron: LIF | None = None, widths: Sequence[int] = (16, 32, 64)) -> None:
        super().__init__()
        _check_positive("SpikingResNet shape and widths", [*in_shape, *widths, n_classes])
        if min(in_shape[1:]) < 2 ** (len(widths) - 1):
            raise ValueError(f"SpikingResNet: input {in_shape[1]}x{in_shape[2]} too small for "
                             f"{len(widths) - 1} stride-2 blocks")
        new_neuron = _neurons(neuron)
        self.sample_shape = tuple(in_shape)
        self.stem = nn.Sequential(ScaledWSConv2d(in_shape[0], widths[0], 3, padding=1), new_neuron(),
                                  Scale(SPIKE_SCALE))
        self.blocks = nn.Sequential(*(SpikingBasicBlock(c_in, c_out, 1 if i == 0 else 2, new_neuron)
                                      for i, (c_in, c_out) in enumerate(zip([widths[0], *widths], widths))))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], n_classes))
        _ws_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# --- the registry (``spikeacc train --model``) --------------------------------------------------

def _mlp(sample_shape, n_classes, neuron, hidden, **options):
    return MLP(math.prod(sample_shape), hidden or (800,), n_classes, neuron, sample_shape, **options)


def _image_model(name: str, factory: Callable) -> Callable:
    def build_model(sample_shape, n_classes, neuron, hidden, **options):
        if len(sample_shape) != 3:
            raise ValueError(f"model {name!r} needs image samples [C, H, W], got shape {tuple(sample_shape)}")
        return factory(tuple(sample_shape), n_classes=n_classes, neuron=neuron,
                       **({"widths": tuple(hidden)} if hidden else {}), **options)
    return build_model


def _conv(sample_shape, n_classes, neuron, hidden):
    if len(sample_shape) != 3:
        raise ValueError(f"model 'conv' needs image samples [C, H, W], got shape {tuple(sample_shape)}")
    return ConvNet(tuple(sample_shape), tuple(hidden) or (16, 32), n_classes, neuron)


MODELS: dict[str, Callable] = {
    "mlp": _mlp,
    "conv": _conv,
    "lenet5": _image_model("lenet5", LeNet5),
    "vgg7": _image_model("vgg7", VGG7),
    "dvs-conv": _image_model("dvs-conv", DVSConvNet),
    "vgg-sws": _image_model("vgg-sws", VGGsWS),
    "resnet": _image_model("resnet", SpikingResNet),
}
# the function behind each name: its keywords but the sizes that ``build`` sets are the model's options
BUILDERS: dict[str, Callable] = {"mlp": MLP, "conv": ConvNet, "lenet5": LeNet5, "vgg7": VGG7, "dvs-conv": DVSConvNet,
                                 "vgg-sws": VGGsWS, "resnet": SpikingResNet}
SIZES = ("in_features", "hidden", "n_classes", "neuron", "sample_shape", "in_shape", "channels", "widths")


def read_options(name: str, options: Iterable[tuple[str, object]]) -> dict[str, object]:
    """The options of model ``name`` (``BUILDERS``), each read as the type its builder
    declares; ValueError for an unknown model, an option it does not take or a bad value."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)} or package.module:function")
    declared = declared_types(BUILDERS[name], skip=SIZES) if name in BUILDERS else {}
    return read_declared(declared, options, f"model {name!r}")


def build(name: str, sample_shape: tuple[int, ...], n_classes: int, neuron: LIF | None = None,
          hidden: Sequence[int] = (), **options) -> nn.Module:
    """Build model ``name`` for samples of ``sample_shape``; ``hidden`` are layer widths
    (MLP) or channels (conv nets), empty for the model's default; ``options`` are read by
    ``read_options``. (A user's network named on the command line: ``spikeacc.model_spec``.)"""
    read = read_options(name, options.items())
    return MODELS[name](tuple(sample_shape), n_classes, neuron, tuple(hidden), **read)
