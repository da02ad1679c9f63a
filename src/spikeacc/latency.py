"""Latency (time-to-first-spike) coding of images: every pixel spikes at most once, the
brighter the earlier (Taylor, King & Harper 2022, Sec. 4; methods.md "Accelerated
single-spike training").

    linear:      t = round((1 - x) (T - 1))                 x = 1 -> t = 0, x -> 0 -> t = T - 1
    logarithmic: t = round((T - 1) ln(x) / ln(x_silent))    x = 1 -> t = 0, x -> x_silent -> T - 1

Steps are 0-based; ``round`` is torch.round (half to even), or with ``rounding="floor"``
truncation, as the authors' code does (``int((1 - x)(T - 1))``; at T = 16, 129 of the 255
non-black 8-bit grey levels then spike one step later). Pixels with x <= x_silent do not spike at
all: by default x_silent = 0 for the linear code (only black pixels are silent) and 0.01
for the logarithmic code (where ln(0) is undefined); ``x_silent=None`` lets every pixel
spike, black ones at T - 1, as the authors' code does. The authors' linear code is
therefore ``rounding="floor", x_silent=None``.

``encode(x [B, ...] in [0, 1], T) -> [T, B, ...]`` with values 0/1 in x's dtype.
"""
from __future__ import annotations

import math

import torch


def _check(x: torch.Tensor, T: int) -> None:
    if int(T) != T or T <= 0:
        raise ValueError(f"T (time steps) must be a positive integer, got {T}")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise ValueError(f"latency coding needs inputs in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")


def spike_train(times: torch.Tensor, fires: torch.Tensor, T: int, dtype: torch.dtype) -> torch.Tensor:
    """One spike per element at ``times`` (long, [B, ...]) where ``fires``: [T, B, ...]."""
    spikes = torch.zeros(T, *times.shape, dtype=dtype, device=times.device)
    return spikes.scatter_(0, times.clamp(0, T - 1).unsqueeze(0), fires.to(dtype).unsqueeze(0))


ROUNDINGS = {"round": torch.round, "floor": torch.floor}


def _rounding(name: str):
    if name not in ROUNDINGS:
        raise ValueError(f"latency rounding must be one of {', '.join(ROUNDINGS)}, got {name!r}")
    return ROUNDINGS[name]


def encode_linear(x: torch.Tensor, T: int, x_silent: float | None = 0.0, rounding: str = "round") -> torch.Tensor:
    """Linear latency code: x [B, ...] in [0, 1] -> spikes [T, B, ...], t = round((1 - x)(T - 1))
    (or floor); pixels with x <= x_silent are silent (none with None)."""
    _check(x, T)
    if x_silent is not None and not 0 <= x_silent < 1:  # 1 or more: every pixel silent
        raise ValueError(f"linear latency coding needs 0 <= x_silent < 1 (pixels at or below it do not spike) "
                         f"or None, got {x_silent}")
    times = _rounding(rounding)((1.0 - x) * (T - 1)).long()  # [B, ...]
    fires = torch.ones_like(x, dtype=torch.bool) if x_silent is None else x > x_silent
    return spike_train(times, fires, T, x.dtype)


def encode_log(x: torch.Tensor, T: int, x_silent: float = 0.01, rounding: str = "round") -> torch.Tensor:
    """Logarithmic latency code: t = round((T - 1) ln(x) / ln(x_silent)) (or floor), x > x_silent spikes."""
    _check(x, T)
    if x_silent is None or not 0 < x_silent < 1:
        raise ValueError(f"logarithmic latency coding needs 0 < x_silent < 1, got {x_silent}")
    fires = x > x_silent
    log_x = torch.log(torch.where(fires, x, torch.ones_like(x)))
    times = _rounding(rounding)((T - 1) * log_x / math.log(x_silent)).long()  # [B, ...]
    return spike_train(times, fires, T, x.dtype)
