"""scikit-learn's bundled 8x8 handwritten digits: the default dataset, no files needed."""
from __future__ import annotations

import os

import numpy as np
from sklearn.datasets import load_digits as sklearn_digits
from sklearn.model_selection import train_test_split

from .base import DataSplit, image_dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits(data_dir: str | os.PathLike | None = None) -> DataSplit:
    """1797 images [1, 8, 8] with values 0..16 scaled to [0, 1], 10 classes; a fixed
    stratified 80/20 train/test split (1437/360), the same on every call. ``data_dir``
    is ignored (the data ship with scikit-learn)."""
    bunch = sklearn_digits()
    images = bunch.images.astype(np.float32)[:, None]  # [N, 1, 8, 8]
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=bunch.target)
    return DataSplit(image_dataset(x_train, y_train, 16.0), image_dataset(x_test, y_test, 16.0),
                     (1, 8, 8), 10, "digits")
