"""Input encoders: turn a data batch into what a method feeds the network.

``get(name, T)(x_batch)`` returns either a static batch [B, ...] (fed at every one of
the T steps) or a sequence [T, B, ...]. Add an encoder as a subclass of ``Encoder``
in its own file and one ``ENCODERS`` line.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from .latency import encode_linear, encode_log
from .typed_options import declared_types, read_options as read_declared


class Encoder:
    """Base: holds T (positive integer); subclasses implement ``__call__``."""

    name = ""

    def __init__(self, T: int) -> None:
        if int(T) != T or T <= 0:
            raise ValueError(f"T (time steps) must be a positive integer, got {T}")
        self.T = int(T)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(T={self.T})"


class Direct(Encoder):
    """Static input: the real-valued batch [B, ...] itself, fed at every step."""

    name = "direct"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Poisson(Encoder):
    """Rate coding: at every step an independent Bernoulli spike with p = scale |x|, signed
    like x; [B, ...] -> [T, B, ...]. ``scale=0.5`` is the ASF-BP authors' encoding (rate
    |x| / 2). Draws from torch's global RNG (seed with torch.manual_seed)."""

    name = "poisson"

    def __init__(self, T: int, scale: float = 1.0) -> None:
        super().__init__(T)
        if not 0 < scale < float("inf"):
            raise ValueError(f"poisson scale must be a positive number, got {scale}")
        self.scale = float(scale)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rate = self.scale * x.abs()
        if rate.numel() and rate.max() > 1:
            raise ValueError(f"poisson encoder needs scale * |x| <= 1, got up to {rate.max():.3g}")
        return torch.bernoulli(rate.expand(self.T, *x.shape)) * torch.sign(x)  # [T, B, ...]


class Frames(Encoder):
    """Event data already binned into frames: [B, T, ...] -> [T, B, ...]."""

    name = "frames"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3 or x.shape[1] != self.T:
            raise ValueError(f"frames encoder with T={self.T} needs a batch [B, {self.T}, ...], "
                             f"got {tuple(x.shape)}")
        return x.transpose(0, 1).contiguous()  # [T, B, ...]


class Latency(Encoder):
    """Linear time-to-first-spike code, [B, ...] in [0, 1] -> [T, B, ...] (latency.py);
    the authors' is ``rounding="floor", x_silent=None``."""

    name = "latency"

    def __init__(self, T: int, x_silent: float | None = 0.0, rounding: str = "round") -> None:
        super().__init__(T)
        self.x_silent, self.rounding = x_silent, rounding
        self(torch.zeros(1))  # options checked now, not at the first batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return encode_linear(x, self.T, self.x_silent, self.rounding)


class LatencyLog(Latency):
    """Logarithmic time-to-first-spike code (latency.py)."""

    name = "latency-log"

    def __init__(self, T: int, x_silent: float = 0.01, rounding: str = "round") -> None:
        super().__init__(T, x_silent, rounding)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return encode_log(x, self.T, self.x_silent, self.rounding)


ENCODERS: dict[str, Callable[[int], Encoder]] = {
    "direct": Direct,
    "poisson": Poisson,
    "frames": Frames,
    "latency": Latency,
    "latency-log": LatencyLog,
}


def read_options(name: str, options: Iterable[tuple[str, object]]) -> dict[str, object]:
    """The keyword ``options`` of encoder ``name``, each value read as the type its
    constructor declares (text included); ValueError for an unknown name or option, or a
    value not of the option's type."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return read_declared(declared_types(ENCODERS[name], skip=("T",)), options, f"encoder {name!r}")


def get(name: str, T: int, **options) -> Encoder:
    """The encoder ``name`` for T steps with keyword ``options`` (``read_options``; ValueError
    for an unknown name, a bad option or a value out of its range)."""
    read = read_options(name, options.items())
    return ENCODERS[name](T, **read)
