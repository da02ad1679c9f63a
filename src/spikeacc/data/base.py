"""What every dataset loader shares: the split it returns, its error, and where it looks."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

ENV_DATA_DIR = "SPIKEACC_DATA"


class DatasetError(Exception):
    """Dataset files missing, truncated or corrupt; the message names the file and how to get it."""


@dataclass
class DataSplit:
    """A dataset ready for training.

    train/test: datasets of (x, y) with x float32 and y int64 (TensorDataset for the
    built-in loaders). Static images have x [C, H, W] in [0, 1] and ``frames`` None;
    event datasets have x [frames, *sample_shape]. ``sample_shape`` is therefore what
    the model sees at one time step.
    """

    train: Dataset
    test: Dataset
    sample_shape: tuple[int, ...]
    n_classes: int
    name: str
    frames: int | None = None


def image_dataset(images: np.ndarray, labels: np.ndarray, scale: float) -> TensorDataset:
    """uint8/float images [N, C, H, W] / scale -> float32 tensors, labels -> int64."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(scale)  # [N, C, H, W]
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64))  # [N]
    return TensorDataset(x, y)


def check_labels(labels: np.ndarray, n_classes: int, path: Path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DatasetError(f"{path}: labels outside 0..{n_classes - 1} (corrupt file?)")


def base_dir(data_dir: str | os.PathLike | None, default: str | None) -> Path | None:
    """The directory to search: ``data_dir``, else $SPIKEACC_DATA, else ``default``."""
    chosen = data_dir if data_dir is not None else os.environ.get(ENV_DATA_DIR) or default
    return None if chosen is None else Path(chosen).expanduser()


def find_dir(name: str, base: Path | None, probe: str, subdirs: Sequence[str], how_to_get: str,
             gz: bool = True) -> Path:
    """The directory holding ``name``'s files: ``base`` itself if it has the file or
    folder ``probe`` (or probe.gz when ``gz``), else the first ``base/<subdir>`` that has it.

    Raises DatasetError naming the missing file and ``how_to_get``.
    """
    if base is None:
        raise DatasetError(f"{name}: no data directory; pass --data-dir or set {ENV_DATA_DIR}. {how_to_get}")
    names = (probe, f"{probe}.gz") if gz else (probe,)
    for folder in (base, *(base / sub for sub in subdirs)):
        if any((folder / filename).exists() for filename in names):
            return folder
    looked = ", ".join(str(base / sub) for sub in subdirs)
    raise DatasetError(f"{name}: missing {base / probe}{'[.gz]' if gz else ''} "
                       f"(also looked in {looked}). {how_to_get}")


def require_file(folder: Path, filename: str, how_to_get: str, gz: bool = True) -> Path:
    """folder/filename, or folder/filename.gz when ``gz``; DatasetError if neither exists."""
    for candidate in (folder / filename, folder / f"{filename}.gz") if gz else (folder / filename,):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"missing {folder / filename}{'[.gz]' if gz else ''}. {how_to_get}")
