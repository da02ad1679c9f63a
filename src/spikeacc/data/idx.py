"""IDX files (the MNIST format, raw or gzip) and the MNIST / Fashion-MNIST loaders.

IDX layout: magic = 0x00 0x00 <dtype code> <ndim>, then ndim big-endian uint32 sizes,
then the values, big-endian, row-major. Both datasets ship four files:
train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
t10k-labels-idx1-ubyte (each optionally .gz).

Where the files are looked for: the directory D given as ``data_dir`` (--data-dir),
else $SPIKEACC_DATA, else (Fashion-MNIST only) /usr/share/datasets/fashion-mnist,
which Debian's ``dataset-fashion-mnist`` package installs. The files may sit in D
itself or in D/<dataset name> (D/mnist, D/fashion-mnist), so one parent directory
can hold several datasets.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from .base import DataSplit, DatasetError, base_dir, check_labels, find_dir, image_dataset, require_file

MAX_DIMS = 4  # MNIST-layout files have 1 (labels) or 3 (images)
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
FILES = {  # split -> (images, labels)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = {
    "mnist": "Get the four MNIST IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
             "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; http://yann.lecun.com/exdb/mnist/ "
             "or a mirror) into the data directory.",
    "fashion-mnist": "Install them with `apt-get install dataset-fashion-mnist` (Debian, into "
                     f"{FASHION_MNIST_SYSTEM_DIR}) or copy the four IDX files from "
                     "https://github.com/zalandoresearch/fashion-mnist (data/fashion) into the data directory.",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw, or gzip when the name ends in .gz); DatasetError if the
    file is truncated, too long, or not IDX."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'})")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES or not 1 <= ndim <= MAX_DIMS:
        raise DatasetError(f"{path}: not an IDX file of images or labels (magic 0x{raw[:4].hex()}: "
                           f"dtype code 0x{code:02x}, {ndim} dimensions)")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DatasetError(f"{path}: {state}: header says {dims} x {dtype.itemsize} B "
                           f"({expected} bytes), file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"{path}: unreadable, truncated or corrupt ({err})") from err


def read_image_pair(images_path: Path, labels_path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, H, W] and their N labels in 0..n_classes-1 from two IDX files."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DatasetError(f"{images_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1]:
        raise DatasetError(f"{labels_path}: {labels.shape} labels for {images.shape[0]} images in {images_path}")
    check_labels(labels, n_classes, labels_path)
    return images, labels


def load_idx_split(name: str, data_dir: str | os.PathLike | None, default: str | None = None) -> DataSplit:
    """MNIST-layout dataset ``name`` (28x28 grey images, 10 classes) from its four IDX files."""
    how_to_get = HOW_TO_GET[name]
    folder = find_dir(name, base_dir(data_dir, default), FILES["train"][0], (name,), how_to_get)
    datasets = {}
    for split, (images_file, labels_file) in FILES.items():
        paths = (require_file(folder, images_file, how_to_get), require_file(folder, labels_file, how_to_get))
        try:
            images, labels = read_image_pair(*paths, n_classes=10)
        except DatasetError as err:
            raise DatasetError(f"{name}: {err}. {how_to_get}") from err
        datasets[split] = image_dataset(images[:, None], labels, 255.0)  # [N, 1, H, W]
    sample_shape = tuple(datasets["train"].tensors[0].shape[1:])
    if tuple(datasets["test"].tensors[0].shape[1:]) != sample_shape:
        raise DatasetError(f"{folder}: train images {sample_shape} and test images "
                           f"{tuple(datasets['test'].tensors[0].shape[1:])} differ in size")
    return DataSplit(datasets["train"], datasets["test"], sample_shape, 10, name)


def load_mnist(data_dir: str | os.PathLike | None = None) -> DataSplit:
    return load_idx_split("mnist", data_dir)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> DataSplit:
    return load_idx_split("fashion-mnist", data_dir, FASHION_MNIST_SYSTEM_DIR)
