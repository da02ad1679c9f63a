"""Dataset loaders on tiny files written in the real formats (IDX raw/gz, CIFAR pickles)."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from spikeacc.data import DATASETS, DataSplit, DatasetError, load_dataset, read_idx
from spikeacc.data.idx import FASHION_MNIST_SYSTEM_DIR

IDX_CODES = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, IDX_CODES[array.dtype.type], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_mnist_dir(folder: Path, gz: bool, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_read_idx_roundtrip(tmp_path, gz, dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 7 - 30).astype(dtype) if dtype != np.uint8 \
        else np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "a-idx3", array, gz)
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == dtype
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_values_shapes_labels(tmp_path, gz):
    arrays = write_mnist_dir(tmp_path, gz)
    split = load_dataset("mnist", tmp_path)
    assert isinstance(split, DataSplit)
    assert (split.sample_shape, split.n_classes, split.name, split.frames) == ((1, 28, 28), 10, "mnist", None)
    x, y = split.train.tensors
    assert x.shape == (6, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_allclose(x[:, 0].numpy(), arrays["train-images-idx3-ubyte"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y.numpy(), arrays["train-labels-idx1-ubyte"])
    x_test, y_test = split.test.tensors
    assert x_test.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_subfolder_and_env(tmp_path, monkeypatch):
    write_mnist_dir(tmp_path / "fashion-mnist", gz=True)
    assert len(load_dataset("fashion-mnist", tmp_path).train) == 6  # parent dir -> <dir>/fashion-mnist
    monkeypatch.setenv("SPIKEACC_DATA", str(tmp_path))
    assert len(load_dataset("fashion-mnist").test) == 4  # $SPIKEACC_DATA, same rule


def test_missing_file_names_it_and_how_to_get(tmp_path):
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte.*dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)
    write_mnist_dir(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match=r"missing .*t10k-labels-idx1-ubyte.*mnist") as err:
        load_dataset("mnist", tmp_path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx(tmp_path, gz):
    write_mnist_dir(tmp_path, gz)
    name = "train-images-idx3-ubyte" + (".gz" if gz else "")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DatasetError, match=f"{name}: .*truncated.*MNIST IDX files"):
        load_dataset("mnist", tmp_path)


def test_bad_magic_trailing_bytes_and_header(tmp_path):
    good = idx_bytes(np.zeros((2, 3), np.uint8))
    cases = {"magic": b"\x01\x02" + good[2:], "dtype": good[:2] + b"\x07" + good[3:],
             "trailing": good + b"\x00", "header": good[:6], "empty": b""}
    for label, data in cases.items():
        (tmp_path / label).write_bytes(data)
        with pytest.raises(DatasetError, match=label):
            read_idx(tmp_path / label)


def test_a_wrong_dimension_count_in_the_magic_gives_a_short_message(tmp_path):
    """A magic claiming 200 dimensions would read pixel bytes as 200 sizes; the message
    names the magic instead of printing them."""
    good = idx_bytes(np.random.default_rng(0).integers(0, 256, (40, 28, 28), dtype=np.uint8))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(good[:3] + bytes([200]) + good[4:])
    with pytest.raises(DatasetError) as err:
        read_idx(path)
    assert "magic 0x000008c8" in str(err.value) and len(str(err.value)) < len(str(path)) + 120


def test_label_count_and_range_checked(tmp_path):
    write_mnist_dir(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8), gz=False)
    with pytest.raises(DatasetError, match="labels for 6 images"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.full(6, 10, np.uint8), gz=False)
    with pytest.raises(DatasetError, match="labels outside"):
        load_dataset("mnist", tmp_path)


def test_digits_default_split():
    split = load_dataset("digits")
    x, y = split.train.tensors
    x_test, y_test = split.test.tensors
    assert (len(x), len(x_test), split.sample_shape, split.n_classes) == (1437, 360, (1, 8, 8), 10)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(y_test), torch.bincount(y_test).clamp(35, 37))  # stratified: 35-37 per class
    again = load_dataset("digits")
    assert torch.equal(again.train.tensors[0], x) and torch.equal(again.test.tensors[1], y_test)


def write_cifar_batch(path: Path, n: int, seed: int, protocol: int = 2) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    batch = {b"batch_label": b"batch", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return data, labels


def write_cifar_dir(folder: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {name: write_cifar_batch(folder / name, 2 + i % 2, i, protocol=2 + i % 4)
            for i, name in enumerate(names)}


def test_cifar10_values_shapes_labels(tmp_path):
    batches = write_cifar_dir(tmp_path / "cifar-10-batches-py")
    split = load_dataset("cifar10", tmp_path)  # parent dir -> cifar-10-batches-py/
    x, y = split.train.tensors
    assert x.shape == (12, 3, 32, 32) and split.sample_shape == (3, 32, 32) and split.n_classes == 10
    data, labels = batches["data_batch_1"]
    red = data[0, :1024].reshape(32, 32) / 255.0
    np.testing.assert_allclose(x[0, 0].numpy(), red, rtol=1e-6)
    np.testing.assert_allclose(x[0, 2].numpy(), data[0, 2048:].reshape(32, 32) / 255.0, rtol=1e-6)
    assert y[:2].tolist() == labels
    assert split.test.tensors[1].tolist() == batches["test_batch"][1]


def test_cifar10_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match=r"test_batch.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path)
    write_cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="missing .*data_batch_3"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "data_batch_3").write_bytes((tmp_path / "data_batch_2").read_bytes()[:100])
    with pytest.raises(DatasetError, match="data_batch_3: corrupt.*cifar-10-python.tar.gz"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetError, match=r"data_batch_3: b'data' must be uint8 \[N, 3072\]"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_pickle_cannot_run_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))
    write_cifar_dir(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": []}))
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        load_dataset("cifar10", tmp_path)


def test_unknown_dataset_lists_choices():
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*digits"):
        load_dataset("nope")
    assert {"digits", "mnist", "fashion-mnist", "cifar10"} <= set(DATASETS)


@pytest.mark.skipif(not Path(FASHION_MNIST_SYSTEM_DIR).is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    split = load_dataset("fashion-mnist", FASHION_MNIST_SYSTEM_DIR)
    x, y = split.train.tensors
    assert x.shape == (60000, 1, 28, 28) and split.test.tensors[0].shape == (10000, 1, 28, 28)
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    assert 0.0 <= float(x.min()) and float(x.max()) == 1.0
