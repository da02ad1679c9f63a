"""Data augmentation of training image batches (``spikeacc train --augment NAME``): each
sample [C, H, W] in [0, 1] of a batch [B, C, H, W] is transformed with its own random
draws, before the encoder; test batches are never augmented. Draws come from torch's
global RNG (seeded and checkpointed by the trainer, so a resumed run draws what a straight
run draws).

``AUGMENTATIONS`` holds the single-spike authors' pipelines (their Block code, the
training transforms of its image datasets), in their order:

1. perspective: with probability p, each corner of the image moves inward by a whole
   number of pixels drawn uniformly from 0..floor(d W / 2) horizontally and
   0..floor(d H / 2) vertically (d the distortion scale), and the image is warped by the
   homography that takes the corners there (bilinear, zeros outside);
2. horizontal flip with probability 1/2 (Fashion-MNIST only);
3. random crop: zero padding of ``crop_padding`` pixels on each side, then a window of the
   original size at a uniformly drawn offset (a shift of up to that many pixels);
4. Gaussian noise: with probability 1/2, noise of standard deviation s ~ U(0, 0.05) is
   added and the image clipped to [0, 1].

"single-spike-fmnist": d = 0.1, p = 0.3, flip, crop padding 1 (the authors' Fashion-MNIST);
"single-spike-mnist": d = 0.4, p = 0.7, no flip, crop padding 3 (their MNIST).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    """One pipeline (module docstring); ``augmentation(x [B, C, H, W]) -> [B, C, H, W]``."""

    distortion: float  # perspective distortion scale d
    p_perspective: float
    flip: bool
    crop_padding: int
    p_noise: float = 0.5
    max_noise_std: float = 0.05

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"augmentation needs image batches [B, C, H, W], got shape {tuple(x.shape)}")
        x = torch.where(chosen(x, self.p_perspective), perspective(x, perspective_corners(x, self.distortion)), x)
        if self.flip:
            x = torch.where(chosen(x, 0.5), x.flip(-1), x)
        x = shift(x, *crop_offsets(x, self.crop_padding))
        return add_noise(x, self.p_noise, self.max_noise_std)


AUGMENTATIONS: dict[str, Augmentation] = {
    "single-spike-fmnist": Augmentation(distortion=0.1, p_perspective=0.3, flip=True, crop_padding=1),
    "single-spike-mnist": Augmentation(distortion=0.4, p_perspective=0.7, flip=False, crop_padding=3),
}


def get(name: str) -> Augmentation:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def chosen(x: torch.Tensor, p: float) -> torch.Tensor:
    """Per sample, True with probability p: [B, 1, 1, 1] for x [B, C, H, W]."""
    return (torch.rand(x.shape[0], 1, 1, 1, device=x.device) < p)


def image_corners(height: int, width: int) -> torch.Tensor:
    """Top-left, top-right, bottom-right, bottom-left pixel indices as (x, y): [4, 2]."""
    return torch.tensor([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=torch.float64)


def perspective_corners(x: torch.Tensor, distortion: float) -> torch.Tensor:
    """Where each sample's corners go (module docstring, step 1): [B, 4, 2] as (x, y)."""
    B, _, height, width = x.shape
    reach = torch.tensor([int(distortion * (width // 2)), int(distortion * (height // 2))], dtype=torch.float64)
    inward = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=torch.float64)  # [4, 2]
    moves = torch.floor(torch.rand(B, 4, 2, dtype=torch.float64) * (reach + 1))  # 0..reach, [B, 4, 2]
    return image_corners(height, width) + inward * moves


def homography(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The 8 coefficients (a, b, c, d, e, f, g, h) of the map (x, y) -> ((a x + b y + c),
    (d x + e y + f)) / (g x + h y + 1) that takes each of the 4 points ``source`` [B, 4, 2]
    to ``target`` [B, 4, 2]: [B, 8] (float64)."""
    x, y = source.unbind(-1)  # [B, 4]
    u, v = target.unbind(-1)
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], dim=-1)  # [B, 4, 8]
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], dim=-1)
    system = torch.cat([rows_u, rows_v], dim=1)  # [B, 8, 8]
    return torch.linalg.solve(system, torch.cat([u, v], dim=1))


def perspective(x: torch.Tensor, corners: torch.Tensor) -> torch.Tensor:
    """Warp each image x [B, C, H, W] so that its corners land on ``corners`` [B, 4, 2]:
    output pixel (i, j) samples the input, bilinearly, at the homography of its centre
    (j + 1/2, i + 1/2) from the new corners to the old ones (zeros outside)."""
    B, _, height, width = x.shape
    coefficients = homography(corners, image_corners(height, width).expand(B, 4, 2))  # [B, 8]
    rows, columns = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                                   torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    points = torch.stack([columns, rows, torch.ones_like(rows)], dim=-1).view(1, -1, 3)  # [1, H*W, 3]
    a, b = coefficients[:, :6].view(B, 2, 3), coefficients[:, 6:]
    denominator = points[..., :2] @ b.unsqueeze(-1) + 1.0  # [B, H*W, 1]
    source = points @ a.transpose(1, 2) / denominator  # [B, H*W, 2] as (x, y)
    grid = source / torch.tensor([width / 2, height / 2], dtype=torch.float64) - 1.0  # grid_sample's [-1, 1]
    grid = grid.view(B, height, width, 2).to(x.dtype)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=False)


def crop_offsets(x: torch.Tensor, padding: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the crop window's offset into the zero-padded image, 0..2 padding, as a
    shift of the image by (offset - padding) pixels: (rows [B], columns [B])."""
    B = x.shape[0]
    return (torch.randint(0, 2 * padding + 1, (B,)) - padding, torch.randint(0, 2 * padding + 1, (B,)) - padding)


def shift(x: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Each image x [B, C, H, W] moved by -rows[b] rows and -columns[b] columns (the crop
    window at offset padding + shift of the zero-padded image), zeros coming in."""
    _, _, height, width = x.shape
    pad = int(max(rows.abs().max(), columns.abs().max(), 0)) if rows.numel() else 0
    padded = F.pad(x, (pad, pad, pad, pad))
    index_rows = (torch.arange(height).view(1, -1) + rows.view(-1, 1) + pad).to(x.device)  # [B, H]
    index_columns = (torch.arange(width).view(1, -1) + columns.view(-1, 1) + pad).to(x.device)  # [B, W]
    picked = padded.gather(2, index_rows.view(-1, 1, height, 1).expand(-1, x.shape[1], -1, padded.shape[3]))
    return picked.gather(3, index_columns.view(-1, 1, 1, width).expand(-1, x.shape[1], height, -1))


def add_noise(x: torch.Tensor, p: float, max_std: float) -> torch.Tensor:
    """With probability p per sample, x + N(0, s^2) with s ~ U(0, max_std), clipped to [0, 1]."""
    std = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) * max_std
    noisy = (x + torch.randn_like(x) * std).clamp_(0.0, 1.0)
    return torch.where(chosen(x, p), noisy, x)
