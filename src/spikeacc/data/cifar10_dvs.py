"""CIFAR10-DVS (Li et al., Front. Neurosci. 11:309, 2017) from its AEDAT 2.0 files.

Layout: ``<dir>/<class>/*.aedat`` for the ten CIFAR-10 classes (airplane ... truck), as
the per-class zips extract; ``<dir>`` is ``data_dir``, else $SPIKEACC_DATA, possibly
with a subfolder cifar10-dvs/, CIFAR10-DVS/ or cifar10_dvs/.

AEDAT 2.0 (iniVation, "AEDAT 2.0" file-format page, docs.inivation.com/software/
software-advanced-usage/file-formats/aedat-2.0.html): header lines starting with '#'
(the first is normally the version line "#!AER-DAT2.0"), then events of a big-endian 32-bit
address and a big-endian 32-bit timestamp in microseconds. The address is interpreted
by the recording chip's class; CIFAR10-DVS was recorded with a DVS128, whose layout
(the AEDAT 1.0 page's "DVS128" table, reused by 2.0) is

    bit 0: polarity (1 ON, 0 OFF),  bits 1-7: x,  bits 8-14: y,  bit 15: external event,

with (0, 0) in the lower-left corner. External events are dropped; any address bit
above 15 means the file is not a DVS128 recording (DatasetError). Frames put y = 0 at
the bottom row (row = 127 - y) and x = 0 in the left column.

Frames: the event stream is integrated into T frames [T, 2, H, W] of event counts,
channel = polarity (0 OFF, 1 ON), either by equal event count (``split_by="count"``,
frame j holds events j*N//T .. (j+1)*N//T - 1 in file order) or by equal duration
(``split_by="time"``, frame floor((t - t_first) * T / (t_last - t_first + 1))).
``downsample`` d sums d x d pixel blocks (128 must be divisible by d).

Split: the dataset has no official split. Here, per class, the files are sorted by the
number in their name (natural order, e.g. cifar10_cat_2 before cifar10_cat_10); the
first 90 % are train, the rest test (900/100 of the 1000 per class). Note that the
split popularised by TEBN (NeurIPS 2022) uses samples 0-99 as test instead.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import DataSplit, DatasetError, base_dir, find_dir

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SENSOR_SIZE = 128
SUBDIRS = ("cifar10-dvs", "CIFAR10-DVS", "cifar10_dvs")
SPLIT_BY = ("count", "time")
TRAIN_FRACTION = 0.9
HOW_TO_GET = ("Download the ten class zips of CIFAR10-DVS (figshare, doi:10.6084/m9.figshare.4724671) and "
              "extract them so that each class has its folder <dir>/<class>/ of .aedat files.")


def read_aedat2(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """DVS128 events of one AEDAT 2.0 file: (t µs int64, x, y, polarity), each [N]."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err}). {HOW_TO_GET}") from err
    body = raw[_header_end(raw, path):]
    if len(body) % 8:
        raise DatasetError(f"{path}: truncated AEDAT 2.0 file (event section of {len(body)} bytes "
                           f"is not a multiple of 8). {HOW_TO_GET}")
    words = np.frombuffer(body, dtype=">i4").reshape(-1, 2).astype(np.int64)  # [N, (address, timestamp)]
    address, stamp = words[:, 0] & 0xFFFFFFFF, words[:, 1]
    if (address >> 16).any():
        bad = int(address[(address >> 16) != 0][0])
        raise DatasetError(f"{path}: address 0x{bad:08x} has bits above 15, so x/y are out of the DVS128's "
                           f"{SENSOR_SIZE}x{SENSOR_SIZE} range (corrupt file or another sensor)")
    pixel = (address >> 15) & 1 == 0  # drop external (IN pin) events
    address, stamp = address[pixel], stamp[pixel]
    return stamp, (address >> 1) & 0x7F, (address >> 8) & 0x7F, address & 1


def _header_end(raw: bytes, path: Path) -> int:
    """Byte offset of the first event, after the '#' header lines; a version line, if
    present, must say 2.x."""
    if not raw.startswith(b"#"):
        raise DatasetError(f"{path}: no '#' header lines, not an AEDAT 2.0 file. {HOW_TO_GET}")
    if raw.startswith(b"#!AER-DAT") and not raw.startswith(b"#!AER-DAT2."):
        version = raw[len(b"#!AER-DAT"):].split(b"\n", 1)[0].strip().decode("ascii", "replace")
        raise DatasetError(f"{path}: AEDAT version {version}, expected 2.x. {HOW_TO_GET}")
    offset = 0
    while raw.startswith(b"#", offset):
        newline = raw.find(b"\n", offset)
        if newline < 0:
            raise DatasetError(f"{path}: header never ends (truncated AEDAT 2.0 file). {HOW_TO_GET}")
        offset = newline + 1
    return offset


def integrate_frames(t: np.ndarray, x: np.ndarray, y: np.ndarray, polarity: np.ndarray, frames: int,
                     split_by: str = "count", downsample: int = 1) -> np.ndarray:
    """Events -> event counts float32 [frames, 2, 128 / d, 128 / d] (module docstring)."""
    n_events = len(t)
    if split_by == "count":
        frame = np.arange(n_events, dtype=np.int64) * frames // max(n_events, 1)
    else:
        frame = (t - t.min()) * frames // (t.max() - t.min() + 1) if n_events else t
    side = SENSOR_SIZE // downsample
    row, col = (SENSOR_SIZE - 1 - y) // downsample, x // downsample
    flat = ((frame * 2 + polarity) * side + row) * side + col
    counts = np.bincount(flat, minlength=frames * 2 * side * side)
    return counts.astype(np.float32).reshape(frames, 2, side, side)


def _natural_key(path: Path) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name))


class CIFAR10DVS(Dataset):
    """(frames float32 [T, 2, H, W], label int64) per file, read lazily.

    ``cache``: keep each sample's frames in memory after its first read.
    """

    def __init__(self, files: list[tuple[Path, int]], frames: int, split_by: str = "count",
                 downsample: int = 1, cache: bool = False) -> None:
        if int(frames) != frames or frames <= 0:
            raise ValueError(f"CIFAR10-DVS frames must be a positive integer, got {frames}")
        if split_by not in SPLIT_BY:
            raise ValueError(f"CIFAR10-DVS split_by must be one of {SPLIT_BY}, got {split_by!r}")
        if int(downsample) != downsample or downsample <= 0 or SENSOR_SIZE % downsample:
            raise ValueError(f"CIFAR10-DVS downsample must divide {SENSOR_SIZE}, got {downsample}")
        self.files, self.frames, self.split_by, self.downsample = files, int(frames), split_by, int(downsample)
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        side = SENSOR_SIZE // self.downsample
        return (2, side, side)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        path, label = self.files[index]
        frames = None if self.cache is None else self.cache.get(index)
        if frames is None:
            frames = torch.from_numpy(self._load(path))  # [T, 2, H, W]
            if self.cache is not None:
                self.cache[index] = frames
        return frames, torch.tensor(label, dtype=torch.int64)

    def _load(self, path: Path) -> np.ndarray:
        t, x, y, polarity = read_aedat2(path)
        if len(t) == 0:
            raise DatasetError(f"{path}: no DVS events in the file (corrupt recording?). {HOW_TO_GET}")
        return integrate_frames(t, x, y, polarity, self.frames, self.split_by, self.downsample)


def split_files(root: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Per class: natural-sorted .aedat files, the first 90 % train, the rest test."""
    train, test = [], []
    for label, name in enumerate(CLASSES):
        folder = root / name
        files = sorted(folder.glob("*.aedat"), key=_natural_key) if folder.is_dir() else []
        if not files:
            raise DatasetError(f"CIFAR10-DVS: no .aedat files in {folder}. {HOW_TO_GET}")
        n_train = math.floor(TRAIN_FRACTION * len(files))
        train += [(path, label) for path in files[:n_train]]
        test += [(path, label) for path in files[n_train:]]
    return train, test


def find_root(data_dir: str | os.PathLike | None) -> Path:
    """The folder holding the class folders: data_dir (else $SPIKEACC_DATA) or a subfolder."""
    return find_dir("CIFAR10-DVS", base_dir(data_dir, None), CLASSES[0], SUBDIRS, HOW_TO_GET, gz=False)


def load_cifar10_dvs(data_dir: str | os.PathLike | None = None, frames: int = 10, split_by: str = "count",
                     downsample: int = 1, cache: bool = False) -> DataSplit:
    """CIFAR10-DVS as a DataSplit of lazily read samples [frames, 2, 128/d, 128/d]."""
    train_files, test_files = split_files(find_root(data_dir))
    train = CIFAR10DVS(train_files, frames, split_by, downsample, cache)
    test = CIFAR10DVS(test_files, frames, split_by, downsample, cache)
    return DataSplit(train, test, train.sample_shape, len(CLASSES), "cifar10-dvs", frames)
