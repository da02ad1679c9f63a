"""N-MNIST binary files (written here in the exact 40-bit event format) -> frames."""
import json

import pytest
import torch

from spikeacc.data.nmnist import DatasetError, NMNIST, bin_events, load_nmnist, read_events


def event_bytes(x, y, polarity, t_us):
    """One event: x, y, then polarity in bit 7 and the 23-bit timestamp, big-endian."""
    assert 0 <= t_us < 2 ** 23
    return bytes([x, y, (polarity << 7) | (t_us >> 16), (t_us >> 8) & 0xFF, t_us & 0xFF])


def write_bin(path, events):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(event_bytes(*e) for e in events))
    return path


def test_read_events_bit_layout(tmp_path):
    events = [(0, 33, 1, 2 ** 23 - 1), (33, 0, 0, 0), (5, 7, 1, 300_000), (12, 3, 0, 0x12345)]
    got = read_events(write_bin(tmp_path / "a.bin", events))
    assert got["x"].tolist() == [0, 33, 5, 12]
    assert got["y"].tolist() == [33, 0, 7, 3]
    assert got["polarity"].tolist() == [1, 0, 1, 0]
    assert got["t_us"].tolist() == [2 ** 23 - 1, 0, 300_000, 0x12345]


def test_binning_merged_and_split(tmp_path):
    events = [(1, 2, 1, 0), (1, 2, 0, 999), (1, 2, 1, 1000), (4, 5, 0, 2999), (6, 6, 1, 3000)]
    parsed = read_events(write_bin(tmp_path / "a.bin", events))
    merged = bin_events(parsed, T=3, bin_us=1000, channels=1)
    assert merged.shape == (3, 1, 34, 34) and merged.dtype == torch.float32
    assert merged[0, 0, 2, 1] == 2 and merged[1, 0, 2, 1] == 1 and merged[2, 0, 5, 4] == 1
    assert merged.sum() == 4  # the event at 3000 us lies after the window
    split = bin_events(parsed, T=3, bin_us=1000, channels=2)
    assert split[0, 0, 2, 1] == 1 and split[0, 1, 2, 1] == 1 and split[1, 1, 2, 1] == 1
    assert split[2, 0, 5, 4] == 1 and split.sum() == 4


def test_dataset_index_and_load(tmp_path):
    root = tmp_path / "N-MNIST"
    write_bin(root / "Train" / "0" / "00001.bin", [(3, 4, 1, 10)])
    write_bin(root / "Train" / "7" / "00002.bin", [(5, 6, 0, 1500), (5, 6, 0, 1600)])
    write_bin(root / "Test" / "9" / "00003.bin", [])
    split = load_nmnist(tmp_path, frames=4, bin_us=1000)
    assert (split.sample_shape, split.frames, split.n_classes) == ((1, 34, 34), 4, 10)
    assert len(split.train) == 2 and len(split.test) == 1
    x, label = split.train[1]
    assert label == 7 and x.shape == (4, 1, 34, 34) and x[1, 0, 6, 5] == 2
    x, label = split.test[0]
    assert label == 9 and x.sum() == 0
    assert len(NMNIST(root / "Train", frames=2, channels=2)[0][0]) == 2


def test_truncated_file_names_it(tmp_path):
    path = write_bin(tmp_path / "Train" / "1" / "bad.bin", [(1, 1, 1, 5)])
    path.write_bytes(path.read_bytes() + b"\x00\x01")
    with pytest.raises(DatasetError, match="bad.bin.*truncated"):
        NMNIST(tmp_path / "Train")[0]


def test_address_out_of_range_names_it(tmp_path):
    path = write_bin(tmp_path / "c.bin", [(34, 0, 0, 1)])
    with pytest.raises(DatasetError, match="c.bin.*outside"):
        read_events(path)


def test_missing_data(tmp_path):
    with pytest.raises(DatasetError, match="missing.*Train.*N-MNIST"):
        load_nmnist(tmp_path)
    (tmp_path / "Train").mkdir()
    with pytest.raises(DatasetError, match="no <digit>"):
        NMNIST(tmp_path / "Train")
    with pytest.raises(ValueError, match="channels"):
        NMNIST(tmp_path / "Train", channels=3)


def write_tiny_nmnist(root, per_class=2):
    """Train and Test folders with ``per_class`` one-event-burst files for digits 0 and 1."""
    for split in ("Train", "Test"):
        for digit in (0, 1):
            for k in range(per_class):
                events = [(3 + 20 * digit, 5 + k, 1, t_us) for t_us in range(0, 4000, 500)]
                write_bin(root / split / str(digit) / f"{k:05d}.bin", events)


def test_load_dataset_options_and_unknown_option(tmp_path):
    from spikeacc.data import dataset_options, load_dataset
    write_tiny_nmnist(tmp_path)
    split = load_dataset("nmnist", tmp_path, frames=3, bin_us=2000, channels=2)
    assert (split.frames, split.sample_shape) == (3, (2, 34, 34))
    assert split.train[0][0][:2].sum() == 8 and split.train[0][0][2].sum() == 0  # 4 ms of events in 2 frames
    assert "frames" in dataset_options("nmnist") and "frames" not in dataset_options("digits")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        dataset_options("nope")
    with pytest.raises(ValueError, match="no option bogus.*frames, bin_us, channels"):
        load_dataset("nmnist", tmp_path, bogus=1)
    with pytest.raises(ValueError, match="positive integer frames"):
        load_dataset("nmnist", tmp_path, frames=0)


def test_cli_bins_event_data_into_T_frames(tmp_path, capsys):
    from test_cli import in_process, one_error_line
    write_tiny_nmnist(tmp_path / "data")
    common = ["train", "--dataset", "nmnist", "--data-dir", str(tmp_path / "data"), "--epochs", "1",
              "--hidden", "8", "--batch-size", "4", "--method", "bptt"]
    assert in_process(*common, "--T", "3", "--dataset-option", "bin_us=2000", "--out", str(tmp_path / "a")) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert (metrics["T"], metrics["dataset_options"], metrics["n_train"]) == (3, {"bin_us": 2000}, 4)
    capsys.readouterr()
    assert in_process(*common, "--T", "3", "--dataset-option", "frames=5", "--out", str(tmp_path / "b")) == 2
    assert "5 frames per sample" in one_error_line(capsys.readouterr().err)
    assert in_process(*common, "--T", "3", "--dataset-option", "bogus=1", "--out", str(tmp_path / "c")) == 2
    assert "no option bogus" in one_error_line(capsys.readouterr().err)
