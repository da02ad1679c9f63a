"""N-MNIST from its original binary files, binned lazily into frames.

File format (Orchard et al. 2015, "Converting static image datasets to spiking
neuromorphic datasets using saccades"; format description on the dataset page
https://www.garrickorchard.com/datasets/n-mnist and its Matlab reader Read_Ndataset.m):
each example is one file, a list of events of 40 bits = 5 bytes each,

    bit 39-32 (byte 0): x address in pixels
    bit 31-24 (byte 1): y address in pixels
    bit 23    (byte 2, bit 7): polarity, 0 OFF, 1 ON
    bit 22-0  (byte 2 bits 6..0, bytes 3, 4): timestamp in microseconds, big-endian

The sensor crop is 34 x 34 pixels. Layout: <root>/Train/<digit>/*.bin and
<root>/Test/<digit>/*.bin (digit folders 0..9; 60000 and 10000 files). <root> is
``data_dir``, else $SPIKEACC_DATA, and the folders may also sit in <root>/N-MNIST or
<root>/nmnist.

A sample is binned into ``frames`` frames of ``bin_us`` microseconds from time 0 (default
300 frames of 1 ms: the first 300 ms, as in Taylor et al. 2022); later events are dropped.
``spikeacc train`` asks for ``frames`` = --T; --dataset-option bin_us=... sets the width.
Each frame holds the event count per pixel, polarities merged (1 channel) or kept
(2 channels, OFF then ON): x [T, C, 34, 34] float32 (y is the row index, x the column).
Files are read and binned on access (60000 x 300 x 34 x 34 frames would not fit in
memory); the index is built by listing the folders.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import DataSplit, DatasetError, base_dir, find_dir

SENSOR_SIZE = 34
EVENT_BYTES = 5
N_CLASSES = 10
SUBDIRS = ("", "N-MNIST", "nmnist")
HOW_TO_GET = ("Download N-MNIST (Train.zip, Test.zip) from https://www.garrickorchard.com/datasets/n-mnist "
              "or https://data.mendeley.com/datasets/468j46mzdv/1 and unzip both into the data directory.")


def read_events(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Events of one N-MNIST file: {"x", "y", "polarity", "t_us"}, each [N] (int64).

    DatasetError naming the file if its length is not a multiple of 5 bytes or an
    address lies outside the 34 x 34 sensor.
    """
    path = Path(path)
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err}). {HOW_TO_GET}") from None
    if raw.size % EVENT_BYTES:
        raise DatasetError(f"{path}: truncated or corrupt N-MNIST file ({raw.size} bytes is not a "
                           f"multiple of {EVENT_BYTES}). {HOW_TO_GET}")
    events = raw.reshape(-1, EVENT_BYTES).astype(np.int64)  # [N, 5]
    x, y = events[:, 0], events[:, 1]
    if x.size and max(x.max(), y.max()) >= SENSOR_SIZE:
        raise DatasetError(f"{path}: corrupt N-MNIST file (address x={x.max()}, y={y.max()} outside the "
                           f"{SENSOR_SIZE}x{SENSOR_SIZE} sensor). {HOW_TO_GET}")
    t_us = ((events[:, 2] & 0x7F) << 16) | (events[:, 3] << 8) | events[:, 4]
    return {"x": x, "y": y, "polarity": events[:, 2] >> 7, "t_us": t_us}


def bin_events(events: dict[str, np.ndarray], T: int, bin_us: int, channels: int) -> torch.Tensor:
    """Event counts per frame and pixel: [T, channels, 34, 34] float32 (channels 1: merged,
    2: OFF, ON); frame k holds events with k * bin_us <= t_us < (k + 1) * bin_us."""
    frame = events["t_us"] // bin_us
    keep = frame < T
    channel = events["polarity"][keep] if channels == 2 else 0
    flat = ((frame[keep] * channels + channel) * SENSOR_SIZE + events["y"][keep]) * SENSOR_SIZE + events["x"][keep]
    counts = np.bincount(flat, minlength=T * channels * SENSOR_SIZE * SENSOR_SIZE)
    return torch.from_numpy(counts.astype(np.float32)).view(T, channels, SENSOR_SIZE, SENSOR_SIZE)


class NMNIST(Dataset):
    """One split (<root>/Train or <root>/Test) as (frames [T, C, 34, 34], label) pairs."""

    def __init__(self, split_dir: str | os.PathLike, frames: int = 300, bin_us: int = 1000,
                 channels: int = 1) -> None:
        if not all(isinstance(n, int) and n > 0 for n in (frames, bin_us)):
            raise ValueError(f"N-MNIST needs positive integer frames and bin_us, got frames={frames!r}, "
                             f"bin_us={bin_us!r}")
        if channels not in (1, 2):
            raise ValueError(f"N-MNIST channels must be 1 (polarities merged) or 2 (kept), got {channels!r}")
        self.frames, self.bin_us, self.channels = frames, bin_us, channels
        self.files = index_files(Path(split_dir))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[i]
        return bin_events(read_events(path), self.frames, self.bin_us, self.channels), label


def index_files(split_dir: Path) -> list[tuple[Path, int]]:
    """(file, digit) for every <split_dir>/<digit>/*.bin, sorted; DatasetError if none."""
    if not split_dir.is_dir():
        raise DatasetError(f"N-MNIST: missing folder {split_dir}. {HOW_TO_GET}")
    files = [(path, digit) for digit in range(N_CLASSES)
             for path in sorted((split_dir / str(digit)).glob("*.bin"))]
    if not files:
        raise DatasetError(f"N-MNIST: no <digit>/*.bin files in {split_dir}. {HOW_TO_GET}")
    return files


def find_root(data_dir: str | os.PathLike | None) -> Path:
    """The folder holding Train/ and Test/: data_dir (else $SPIKEACC_DATA) or its
    N-MNIST / nmnist subfolder."""
    return find_dir("N-MNIST", base_dir(data_dir, None), "Train", SUBDIRS[1:], HOW_TO_GET, gz=False)


def load_nmnist(data_dir: str | os.PathLike | None = None, frames: int = 300, bin_us: int = 1000,
                channels: int = 1) -> DataSplit:
    """N-MNIST as a DataSplit: samples [frames, channels, 34, 34], 10 classes."""
    root = find_root(data_dir)
    train = NMNIST(root / "Train", frames, bin_us, channels)
    test = NMNIST(root / "Test", frames, bin_us, channels)
    return DataSplit(train, test, (channels, SENSOR_SIZE, SENSOR_SIZE), N_CLASSES, "nmnist", frames)
