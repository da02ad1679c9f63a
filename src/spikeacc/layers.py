"""Layers the papers' networks use besides torch.nn's: scaled weight standardisation
(the OTTT and SAF CIFAR networks, after Brock et al.'s NF-Nets), a constant scale, and
SpikingJelly's voting readout.

All are affine in their input, so every method runs them; their forward is written with
F.conv2d / F.linear and a weight computed from the parameters, which spikeacc's graph
reads as a static weight (computed once per method call) and an affine op.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def standardized(weight: torch.Tensor, gain: torch.Tensor | None, eps: float, dims: tuple[int, ...],
                 fan_in: int) -> torch.Tensor:
    """Scaled weight standardisation (OTTT's code): per output unit (reducing over
    ``dims``), W_hat = gain * (W - mean(W)) / sqrt(var(W) * fan_in + eps), var unbiased.
    (``dims`` and ``fan_in`` come from the module, not the tensor, so the graph can be traced.)"""
    mean = weight.mean(dims, keepdim=True)
    var = weight.var(dims, keepdim=True)
    weight = (weight - mean) / torch.sqrt(var * fan_in + eps)
    return weight if gain is None else weight * gain


class ScaledWSConv2d(nn.Conv2d):
    """Conv2d with scaled weight standardisation and a learnable gain per output channel."""

    def __init__(self, *args, gain: bool = True, eps: float = 1e-4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1)) if gain else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        weight = standardized(self.weight, self.gain, self.eps, (1, 2, 3), fan_in)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledWSLinear(nn.Linear):
    """Linear with scaled weight standardisation and a learnable gain per output."""

    def __init__(self, *args, gain: bool = True, eps: float = 1e-4, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_features, 1)) if gain else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, standardized(self.weight, self.gain, self.eps, (1,), self.in_features), self.bias)


class Scale(nn.Module):
    """x * factor (OTTT's VGG multiplies every neuron's spikes by 2.74)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(factor)

    def extra_repr(self) -> str:
        return f"factor={self.factor}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class Voting(nn.Module):
    """The mean of every ``voting_size`` consecutive features: [B, K * voting_size] -> [B, K]
    (SpikingJelly's VotingLayer, an average pooling; affine, so every method runs it)."""

    def __init__(self, voting_size: int = 10) -> None:
        super().__init__()
        self.voting_size = int(voting_size)

    def extra_repr(self) -> str:
        return f"voting_size={self.voting_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool1d(x.unsqueeze(1), self.voting_size, self.voting_size).squeeze(1)
