"""Datasets by name: ``load_dataset(name, data_dir=None, **options) -> DataSplit``.

Built in: "digits" (scikit-learn's 8x8 digits, needs no files; the default),
"mnist" and "fashion-mnist" (IDX files, raw or .gz), "cifar10" (python batches),
"nmnist" (original 40-bit event files), "cifar10-dvs" (AEDAT 2.0 event files), "shd"
(Spiking Heidelberg Digits, HDF5 files; needs h5py).
Loaders look in ``data_dir``, else $SPIKEACC_DATA, else a dataset default
(/usr/share/datasets/fashion-mnist for Fashion-MNIST), and accept the files either in
that directory or in a subfolder named after the dataset (see idx.py, cifar10.py).
Options are the loader's keywords (event datasets: ``frames``, and ``bin_us``/``channels``
for N-MNIST, ``split_by``/``downsample``/``cache`` for CIFAR10-DVS, ``max_time``/``binary``
for SHD). Add a dataset with a loader ``(data_dir, **options) -> DataSplit`` in its own
file and one ``DATASETS`` line.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable

from ..typed_options import declared_types, read_options as read_declared
from .base import DataSplit, DatasetError
from .cifar10 import load_cifar10
from .cifar10_dvs import load_cifar10_dvs
from .digits import load_digits
from .idx import load_fashion_mnist, load_mnist, read_idx
from .nmnist import load_nmnist
from .shd import load_shd

DATASETS: dict[str, Callable[..., DataSplit]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "nmnist": load_nmnist,
    "cifar10-dvs": load_cifar10_dvs,
    "shd": load_shd,
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **options) -> DataSplit:
    """Load dataset ``name`` with the loader's keyword ``options`` (ValueError if the name
    or an option is unknown or bad, DatasetError if its files are bad); ``options`` are
    read by ``read_options``."""
    read = read_options(name, options.items())
    return DATASETS[name](data_dir, **read)


def read_options(name: str, options: Iterable[tuple[str, object]]) -> dict[str, object]:
    """The keyword ``options`` of dataset ``name``'s loader, each value read as the type the
    loader declares (text included); ValueError for an unknown name or option, or a value
    not of the option's type."""
    return read_declared(_declared(name), options, f"dataset {name!r}")


def dataset_options(name: str) -> list[str]:
    """The keyword options of dataset ``name``'s loader (``frames`` marks event data);
    ValueError if the name is unknown."""
    return list(_declared(name))


def _declared(name: str) -> dict[str, object]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return declared_types(DATASETS[name], skip=("data_dir",))


__all__ = ["DATASETS", "DataSplit", "DatasetError", "dataset_options", "load_dataset", "read_idx",
           "read_options"]
