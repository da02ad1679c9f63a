"""CIFAR10-DVS loader (data/cifar10_dvs.py) on small AEDAT 2.0 files written in the real format."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spikeacc.data.cifar10_dvs import (CLASSES, DatasetError, integrate_frames, load_cifar10_dvs,
                                       read_aedat2)

HEADER = b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n# Timestamps tick is 1 us\r\n"


def dvs128_address(x, y, polarity, external=0):
    """The DVS128 address word: bit 0 polarity, bits 1-7 x, bits 8-14 y, bit 15 external."""
    return (external << 15) | (y << 8) | (x << 1) | polarity


def write_aedat(path: Path, events, header: bytes = HEADER) -> Path:
    """events: (address, timestamp µs) pairs -> big-endian int32 pairs after the header."""
    body = np.array(events, dtype=">u4").reshape(-1, 2).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body)
    return path


def test_read_decodes_dvs128_addresses(tmp_path):
    events = [(dvs128_address(3, 120, 1), 10), (dvs128_address(127, 0, 0), 25),
              (dvs128_address(5, 5, 1, external=1), 30), (dvs128_address(0, 64, 0), 2 ** 31 - 1)]
    t, x, y, p = read_aedat2(write_aedat(tmp_path / "a.aedat", events))
    assert t.tolist() == [10, 25, 2 ** 31 - 1]  # the external event is dropped
    assert x.tolist() == [3, 127, 0] and y.tolist() == [120, 0, 64] and p.tolist() == [1, 0, 0]


def test_integrate_by_count_and_by_time():
    t = np.array([0, 1, 2, 3, 100, 101])
    x = np.array([0, 1, 2, 3, 4, 127])
    y = np.array([127, 127, 0, 0, 0, 0])  # y = 127 is the top row (row 0)
    p = np.array([1, 0, 1, 1, 0, 1])
    by_count = integrate_frames(t, x, y, p, 3, "count")
    assert by_count.shape == (3, 2, 128, 128) and by_count.dtype == np.float32
    assert by_count[0, 1, 0, 0] == 1 and by_count[0, 0, 0, 1] == 1  # events 0, 1 in frame 0
    assert by_count[1, 1, 127, 2] == 1 and by_count[1, 1, 127, 3] == 1
    assert by_count[2, 0, 127, 4] == 1 and by_count[2, 1, 127, 127] == 1
    by_time = integrate_frames(t, x, y, p, 2, "time")  # duration 102 µs: [0, 51) and [51, 102)
    assert by_time[0].sum() == 4 and by_time[1].sum() == 2
    pooled = integrate_frames(t, x, y, p, 1, "count", downsample=4)
    assert pooled.shape == (1, 2, 32, 32) and pooled[0, 1, 31, 0] == 2  # x = 2, 3 share a block
    assert pooled.sum() == len(t)


def write_dataset(root: Path, per_class: int = 11) -> None:
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        for i in range(per_class):
            n = 20 + i
            events = [(dvs128_address(int(rng.integers(128)), int(rng.integers(128)), int(rng.integers(2))),
                       1000 * label + 10 * k) for k in range(n)]
            write_aedat(root / name / f"cifar10_{name}_{i}.aedat", events)


def test_loader_split_shapes_and_cache(tmp_path):
    write_dataset(tmp_path / "CIFAR10-DVS")
    split = load_cifar10_dvs(tmp_path, frames=4, downsample=2, cache=True)
    assert (split.name, split.n_classes, split.frames, split.sample_shape) == ("cifar10-dvs", 10, 4, (2, 64, 64))
    assert len(split.train) == 90 and len(split.test) == 20  # floor(0.9 * 11) = 9 train per class
    # natural order: cifar10_<c>_0 .. _8 train, _9 and _10 test
    assert [p.name for p, _ in split.test.files[:2]] == ["cifar10_airplane_9.aedat", "cifar10_airplane_10.aedat"]
    x, y = split.train[9]
    assert x.shape == (4, 2, 64, 64) and x.dtype == torch.float32 and y.item() == 1 and y.dtype == torch.int64
    assert x.sum().item() == 20  # cifar10_automobile_0 has 20 events
    assert split.train[9][0] is x  # cached


@pytest.mark.parametrize("body, message", [
    (HEADER + b"\x00" * 13, "not a multiple of 8"),
    (b"\x00" * 16, "no '#' header"),
    (b"#!AER-DAT3.1\r\n" + b"\x00" * 16, "AEDAT version 3.1, expected 2.x"),
    (b"#!AER-DAT2.0 no newline", "header never ends"),
    (HEADER + np.array([1 << 16, 5], dtype=">u4").tobytes(), "bits above 15"),
    (HEADER, "no DVS events"),
])
def test_corrupt_files_raise_dataset_error_naming_the_file(tmp_path, body, message):
    write_dataset(tmp_path, per_class=2)
    bad = tmp_path / "airplane" / "cifar10_airplane_0.aedat"
    bad.write_bytes(body)
    split = load_cifar10_dvs(tmp_path, frames=2)
    with pytest.raises(DatasetError, match=message) as err:
        split.train[0]
    assert str(bad) in str(err.value)


def test_missing_data_raise_dataset_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SPIKEACC_DATA", raising=False)
    with pytest.raises(DatasetError, match="no data directory"):
        load_cifar10_dvs(None)
    with pytest.raises(DatasetError, match="airplane"):
        load_cifar10_dvs(tmp_path)
    write_dataset(tmp_path, per_class=2)
    for f in (tmp_path / "truck").iterdir():
        f.unlink()
    with pytest.raises(DatasetError, match="truck"):
        load_cifar10_dvs(tmp_path)


@pytest.mark.parametrize("options", [{"frames": 0}, {"split_by": "rate"}, {"downsample": 3}])
def test_bad_options_are_value_errors(tmp_path, options):
    write_dataset(tmp_path, per_class=2)
    with pytest.raises(ValueError):
        load_cifar10_dvs(tmp_path, **options)


def test_header_without_version_line_is_accepted(tmp_path):
    path = write_aedat(tmp_path / "b.aedat", [(dvs128_address(1, 2, 1), 7)], header=b"# recorded by jAER\r\n")
    t, x, y, p = read_aedat2(path)
    assert (t.tolist(), x.tolist(), y.tolist(), p.tolist()) == ([7], [1], [2], [1])
