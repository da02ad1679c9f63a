"""CIFAR-10 from its "python version" directory cifar-10-batches-py/.

data_batch_1..5 and test_batch are pickled dicts with b"data" (uint8 [N, 3072], the
red, green and blue 32x32 planes in turn) and b"labels" (N ints 0..9). The pickles are
read with an unpickler that accepts only the numpy types an array needs, so a
tampered file cannot run code.

Where the directory is looked for: ``data_dir`` D (--data-dir), else $SPIKEACC_DATA;
the batches may sit in D itself, D/cifar-10-batches-py, D/cifar10 or
D/cifar10/cifar-10-batches-py.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from .base import DataSplit, DatasetError, base_dir, check_labels, find_dir, image_dataset, require_file

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
SUBDIRS = ("cifar-10-batches-py", "cifar10", "cifar10/cifar-10-batches-py")
HOW_TO_GET = ("Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
              "extract it there (it unpacks to cifar-10-batches-py/).")
_NUMPY_MODULES = {"numpy", "numpy.core.multiarray", "numpy._core.multiarray",
                  "numpy.core.numeric", "numpy._core.numeric"}
_NUMPY_NAMES = {"_reconstruct", "ndarray", "dtype", "_frombuffer"}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only what a pickled numpy array refers to."""

    def find_class(self, module: str, name: str):
        if (module in _NUMPY_MODULES and name in _NUMPY_NAMES) or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images uint8 [N, 3, 32, 32], labels int64 [N])."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as err:  # a corrupt pickle can raise almost anything
        raise DatasetError(f"{path}: corrupt CIFAR-10 batch ({type(err).__name__}: {err})") from err
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"{path}: not a CIFAR-10 batch (no b'data'/b'labels')")
    data, labels = batch[b"data"], np.asarray(batch[b"labels"])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"{path}: b'data' must be uint8 [N, 3072], got "
                           f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}: {labels.shape} labels for {data.shape[0]} images")
    check_labels(labels, 10, path)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(data_dir: str | os.PathLike | None = None) -> DataSplit:
    """CIFAR-10: 50000 train / 10000 test images [3, 32, 32] in [0, 1], 10 classes."""
    folder = find_dir("cifar10", base_dir(data_dir, None), TEST_BATCH, SUBDIRS, HOW_TO_GET, gz=False)
    paths = [require_file(folder, name, HOW_TO_GET, gz=False) for name in (*TRAIN_BATCHES, TEST_BATCH)]
    try:
        *train, (test_images, test_labels) = [read_batch(path) for path in paths]
    except DatasetError as err:
        raise DatasetError(f"cifar10: {err}. {HOW_TO_GET}") from err
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    return DataSplit(image_dataset(train_images, train_labels, 255.0),
                     image_dataset(test_images, test_labels, 255.0), (3, 32, 32), 10, "cifar10")
