"""Spiking Heidelberg Digits (SHD) from its HDF5 files, binned into frames.

Dataset: Cramer, Stradmann, Schemmel & Zenke, "The Heidelberg Spiking Data Sets for the
Systematic Evaluation of Spiking Neural Networks", IEEE TNNLS 33:2744 (2022); files and
format on https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/ (mirror
https://compneuro.net/). Spoken digits 0-9 in English and German (20 classes) passed
through a cochlea model with 700 output channels; 8156 train and 2264 test samples.
Each of shd_train.h5 and shd_test.h5 holds

    spikes/times   [N] variable-length float arrays: one sample's spike times in seconds
    spikes/units   [N] variable-length integer arrays: the channel 0..699 of each spike,
                   as long as the sample's times
    labels         [N] integers 0..19
    extra/         speaker, keys, meta_info (not read here)

The files are distributed gzipped; a .h5.gz is decompressed into memory on every load
(gunzip it once to skip that). Files are looked for in ``data_dir``, else $SPIKEACC_DATA,
or in its subfolder SHD/ or shd/.

Frames: the spikes of a sample in the window [0, max_time) fall into ``frames`` bins of
max_time / frames seconds, frame = floor(t * frames / max_time); later spikes are dropped.
x [frames, 700] float32 holds the spike count per bin and channel, or 1 where a bin has any
spike with ``binary=True``. Defaults follow the single-spike paper's code (Taylor et al.
2022; github.com/webstorms/Block, package fastsnn: SHD with t_len=500 steps of dt=2 ms in
scripts/run_training.py and datasets/transforms.py): frames=500, max_time=1.0 s. That code
rounds t / dt to the nearest step (bins half a step earlier than here) and its sparse to
dense conversion adds coincident spikes, so it feeds counts too. ``spikeacc train`` asks for
``frames`` = --T; --dataset-option max_time=..., binary=true set the rest.

Memory: a sample keeps only the flat bin index frame * 700 + unit (int32) of each spike in
the window, and frames are counted on access (the dense train set at 500 frames would take
8156 x 500 x 700 x 4 B = 11.4 GB).
"""
from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import DataSplit, DatasetError, base_dir, check_labels, find_dir, require_file

N_CHANNELS = 700
N_CLASSES = 20
SPLIT_FILES = {"train": "shd_train.h5", "test": "shd_test.h5"}
SUBDIRS = ("SHD", "shd")
MAX_FRAMES = (2 ** 31 - 1) // N_CHANNELS  # flat bin indices stay int32
HOW_TO_GET = ("Download shd_train.h5.gz and shd_test.h5.gz from https://zenkelab.org/datasets/ (mirror "
              "https://compneuro.net/datasets/; see https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/) "
              "into the data directory, gunzipped or not.")
INSTALL_H5PY = "reading SHD needs h5py: pip install 'spikeacc[shd]' (or pip install h5py)"


@dataclass
class SpikeRecords:
    """The samples of one SHD file (layout in the module docstring)."""

    times: list[np.ndarray]  # N arrays [S_i]: spike times in seconds
    units: list[np.ndarray]  # N arrays [S_i]: channel 0..699 of each spike
    labels: np.ndarray  # [N] int64, 0..19


def import_h5py():
    """The h5py module; DatasetError saying how to install it if it is missing."""
    try:
        import h5py
    except ImportError:
        raise DatasetError(INSTALL_H5PY) from None
    return h5py


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def open_hdf5(path: Path):
    """h5py.File of ``path``, read-only; a .gz is decompressed into memory first.
    DatasetError naming the file if it is not (gzipped) HDF5."""
    h5py = import_h5py()
    gzipped = path.suffix == ".gz"
    try:
        return h5py.File(io.BytesIO(gzip.decompress(path.read_bytes())) if gzipped else path, "r")
    except (OSError, EOFError, zlib.error) as err:
        kind = "gzipped HDF5" if gzipped else "HDF5"
        raise DatasetError(f"{path}: not a readable {kind} file ({_first_line(err)}). {HOW_TO_GET}") from None


def read_column(file, key: str, kinds: str, vlen: bool, path: Path) -> np.ndarray:
    """file[key] as an [N] array (vlen: of arrays), checked to be a 1-D dataset whose values
    have a numpy kind in ``kinds`` ("f" float, "iu" integer)."""
    h5py = import_h5py()
    column = file.get(key)
    if not isinstance(column, h5py.Dataset):
        raise DatasetError(f"{path}: no dataset '{key}' (not an SHD file?). {HOW_TO_GET}")
    values = h5py.check_vlen_dtype(column.dtype) if vlen else column.dtype
    if column.ndim != 1 or values is None or values.kind not in kinds:
        what = ("variable-length " if vlen else "") + ("float" if kinds == "f" else "integer")
        dtype = f"variable-length {values}" if vlen and values is not None else column.dtype
        raise DatasetError(f"{path}: '{key}' is not a 1-D list of {what} values "
                           f"(shape {column.shape}, dtype {dtype}; not an SHD file?)")
    return column[()]


def check_sample(times: np.ndarray, units: np.ndarray, where: str) -> None:
    """DatasetError starting with ``where`` if times and units differ in length, a time is
    negative, NaN or infinite, or a unit lies outside 0..699."""
    if len(times) != len(units):
        raise DatasetError(f"{where} has {len(times)} spike times but {len(units)} units (corrupt file?)")
    bad_times = times[~(np.isfinite(times) & (times >= 0))]
    if bad_times.size:
        raise DatasetError(f"{where} has spike time {bad_times[0]} (times must be finite and >= 0; corrupt file?)")
    bad_units = units[(units < 0) | (units >= N_CHANNELS)]
    if bad_units.size:
        raise DatasetError(f"{where} has unit {bad_units[0]} outside 0..{N_CHANNELS - 1} (corrupt file?)")


def read_shd(path: str | os.PathLike) -> SpikeRecords:
    """Spike times, units and labels of one SHD file; DatasetError naming the file if its
    layout or a value is wrong."""
    path = Path(path)
    with open_hdf5(path) as file:
        try:
            times = read_column(file, "spikes/times", "f", True, path)  # [N] of [S_i]
            units = read_column(file, "spikes/units", "iu", True, path)  # [N] of [S_i]
            labels = read_column(file, "labels", "iu", False, path)  # [N]
        except OSError as err:  # e.g. a damaged heap of the variable-length arrays
            raise DatasetError(f"{path}: corrupt HDF5 file ({_first_line(err)}). {HOW_TO_GET}") from None
    if not len(times) == len(units) == len(labels):
        raise DatasetError(f"{path}: sample counts disagree: {len(times)} in spikes/times, {len(units)} in "
                           f"spikes/units, {len(labels)} labels (corrupt file?)")
    for i, (sample_times, sample_units) in enumerate(zip(times, units)):
        check_sample(sample_times, sample_units, f"{path}: sample {i}")
    check_labels(labels, N_CLASSES, path)
    return SpikeRecords(list(times), list(units), labels.astype(np.int64))


def spike_cells(times: np.ndarray, units: np.ndarray, frames: int, max_time: float) -> np.ndarray:
    """Flat bin index frame * 700 + unit (int32) of each spike with t < max_time, where
    frame = floor(t * frames / max_time); times must be >= 0."""
    position = times.astype(np.float64) * frames / max_time  # [S], in frames
    inside = position < frames
    frame = position[inside].astype(np.int64)  # floor, as position >= 0
    return (frame * N_CHANNELS + units[inside]).astype(np.int32)


def count_frames(cells: np.ndarray, frames: int, binary: bool = False) -> torch.Tensor:
    """Spikes per bin and channel from flat bin indices: [frames, 700] float32 (binary: 1 where any)."""
    counts = np.bincount(cells, minlength=frames * N_CHANNELS)  # [frames * 700]
    if binary:
        counts = np.minimum(counts, 1)
    return torch.from_numpy(counts.astype(np.float32)).view(frames, N_CHANNELS)


def bin_spikes(times: np.ndarray, units: np.ndarray, frames: int = 500, max_time: float = 1.0,
               binary: bool = False) -> torch.Tensor:
    """One sample's spikes -> frames [frames, 700] float32 (module docstring)."""
    return count_frames(spike_cells(times, units, frames, max_time), frames, binary)


def check_options(frames: int, max_time: float, binary: bool) -> None:
    """ValueError naming the option if frames, max_time or binary is invalid."""
    if isinstance(frames, bool) or not isinstance(frames, int) or not 0 < frames <= MAX_FRAMES:
        raise ValueError(f"SHD frames must be an integer from 1 to {MAX_FRAMES}, got {frames!r}")
    if isinstance(max_time, bool) or not isinstance(max_time, (int, float)) or not 0 < max_time < math.inf:
        raise ValueError(f"SHD max_time must be a positive number of seconds, got {max_time!r}")
    if not isinstance(binary, bool):
        raise ValueError(f"SHD binary must be true or false, got {binary!r}")


class SHD(Dataset):
    """One SHD file as (frames [T, 700] float32, label int64) pairs; the spikes are read
    once and binned on access."""

    def __init__(self, path: str | os.PathLike, frames: int = 500, max_time: float = 1.0,
                 binary: bool = False) -> None:
        check_options(frames, max_time, binary)
        records = read_shd(path)
        self.frames, self.binary = frames, binary
        self.cells = [spike_cells(times, units, frames, max_time)  # N arrays [S_i in window], int32
                      for times, units in zip(records.times, records.units)]
        self.labels = torch.from_numpy(records.labels)  # [N] int64

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return count_frames(self.cells[i], self.frames, self.binary), self.labels[i]


def find_files(data_dir: str | os.PathLike | None) -> dict[str, Path]:
    """{"train": shd_train.h5[.gz], "test": shd_test.h5[.gz]} in data_dir (else
    $SPIKEACC_DATA) or its SHD/ or shd/ subfolder; DatasetError if one is missing."""
    folder = find_dir("SHD", base_dir(data_dir, None), SPLIT_FILES["train"], SUBDIRS, HOW_TO_GET)
    return {split: require_file(folder, name, HOW_TO_GET) for split, name in SPLIT_FILES.items()}


def load_shd(data_dir: str | os.PathLike | None = None, frames: int = 500, max_time: float = 1.0,
             binary: bool = False) -> DataSplit:
    """SHD as a DataSplit: samples [frames, 700], 20 classes."""
    files = find_files(data_dir)
    train = SHD(files["train"], frames, max_time, binary)
    test = SHD(files["test"], frames, max_time, binary)
    return DataSplit(train, test, (N_CHANNELS,), N_CLASSES, "shd", frames)
