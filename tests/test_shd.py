"""SHD HDF5 files (written here in the published layout: spikes/times and spikes/units as
variable-length arrays, labels, extra/) -> frames [T, 700], and clear errors for bad files."""
import gzip
import json
import math
import sys

import h5py
import numpy as np
import pytest
import torch

from spikeacc.data import dataset_options, load_dataset
from spikeacc.data.shd import MAX_FRAMES, SHD, DatasetError, bin_spikes, load_shd, read_shd


def ragged(arrays, dtype):
    """[N] object array of 1-D arrays, as h5py writes a variable-length dataset."""
    column = np.empty(len(arrays), dtype=object)
    column[:] = [np.asarray(a, dtype=dtype) for a in arrays]
    return column


def write_shd(path, times, units, labels, time_dtype=np.float16, unit_dtype=np.uint16):
    """An SHD file: per sample a list of spike times (s) and units; labels uint8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes/times", data=ragged(times, time_dtype), dtype=h5py.vlen_dtype(time_dtype))
        f.create_dataset("spikes/units", data=ragged(units, unit_dtype), dtype=h5py.vlen_dtype(unit_dtype))
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8))
        f.create_dataset("extra/speaker", data=np.zeros(len(labels), dtype=np.uint8))
    return path


TRAIN = {"times": [[0.0, 0.25, 0.25, 0.5], [0.75, 0.999, 1.0, 3.0], []],
         "units": [[0, 1, 1, 699], [5, 5, 6, 7], []], "labels": [0, 19, 7]}
TEST = {"times": [[0.125]], "units": [[42]], "labels": [3]}


def write_split(folder, train=TRAIN, test=TEST, **kwargs):
    write_shd(folder / "shd_train.h5", **train, **kwargs)
    write_shd(folder / "shd_test.h5", **test, **kwargs)
    return folder


def test_binning_by_hand():
    times = np.array([0.0, 0.2499, 0.25, 0.25, 0.5, 0.75, 0.999, 1.0, 2.5])
    units = np.array([0, 3, 3, 3, 699, 10, 10, 1, 2])
    x = bin_spikes(times, units, frames=4, max_time=1.0)  # bins [0, .25), [.25, .5), [.5, .75), [.75, 1)
    assert x.shape == (4, 700) and x.dtype == torch.float32
    assert x[0, 0] == 1 and x[0, 3] == 1  # 0.2499 still in the first bin
    assert x[1, 3] == 2  # two spikes on the edge 0.25 open the second bin
    assert x[2, 699] == 1  # the edge 0.5, last channel
    assert x[3, 10] == 2  # 0.75 and 0.999: the last bin
    assert x.sum() == 7  # 1.0 (= max_time) and 2.5 lie after the window
    assert bin_spikes(times, units, frames=4, max_time=1.0, binary=True)[1, 3] == 1
    shorter = bin_spikes(times, units, frames=2, max_time=0.5)  # bins of 0.25 s up to 0.5
    assert shorter[0, 3] == 1 and shorter[1, 3] == 2 and shorter.sum() == 4


def test_load_split_shapes_and_labels(tmp_path):
    write_split(tmp_path / "SHD")
    split = load_shd(tmp_path, frames=4)
    assert (split.name, split.sample_shape, split.n_classes, split.frames) == ("shd", (700,), 20, 4)
    assert (len(split.train), len(split.test)) == (3, 1)
    assert [int(split.train[i][1]) for i in range(3)] == [0, 19, 7]
    x, label = split.train[0]
    assert x.shape == (4, 700) and x.dtype == torch.float32 and label.dtype == torch.int64
    assert x[0, 0] == 1 and x[1, 1] == 2 and x[2, 699] == 1 and x.sum() == 4
    x, _ = split.train[1]
    assert x[3, 5] == 2 and x.sum() == 2  # 0.75, 0.999 kept; 1.0 and 3.0 dropped
    assert split.train[2][0].sum() == 0  # a sample without spikes
    x, label = split.test[0]
    assert int(label) == 3 and x[0, 42] == 1 and x.sum() == 1


@pytest.mark.parametrize("time_dtype, unit_dtype", [(np.float32, np.int64), (np.float64, np.int16)])
def test_any_float_times_and_integer_units(tmp_path, time_dtype, unit_dtype):
    write_split(tmp_path, time_dtype=time_dtype, unit_dtype=unit_dtype)
    reference = write_split(tmp_path / "ref")
    assert torch.equal(SHD(tmp_path / "shd_train.h5", 4)[1][0], SHD(reference / "shd_train.h5", 4)[1][0])


def test_gzipped_files_in_shd_subfolder_and_env(tmp_path, monkeypatch):
    plain = write_split(tmp_path / "plain")
    for name in ("shd_train.h5", "shd_test.h5"):
        (tmp_path / "shd").mkdir(exist_ok=True)
        (tmp_path / "shd" / f"{name}.gz").write_bytes(gzip.compress((plain / name).read_bytes()))
    monkeypatch.setenv("SPIKEACC_DATA", str(tmp_path))
    zipped = load_shd(frames=4)
    assert len(zipped.train) == 3
    assert torch.equal(zipped.train[0][0], load_shd(plain, frames=4).train[0][0])


def test_options(tmp_path):
    write_split(tmp_path)
    assert dataset_options("shd") == ["frames", "max_time", "binary"]
    split = load_dataset("shd", tmp_path, frames=2, max_time=0.5, binary=True)
    x = split.train[0][0]
    assert split.frames == 2 and x.shape == (2, 700) and x[1, 1] == 1 and x.sum() == 2  # 0.25 twice: 1; 0.5 is out
    assert load_shd(tmp_path).train[0][0].shape == (500, 700)  # default: 500 bins of 2 ms
    with pytest.raises(ValueError, match="no option bogus.*frames, max_time, binary"):
        load_dataset("shd", tmp_path, bogus=1)


@pytest.mark.parametrize("option, value", [("frames", 0), ("frames", True), ("frames", 2.0),
                                           ("frames", MAX_FRAMES + 1), ("max_time", 0), ("max_time", -1.0),
                                           ("max_time", math.inf), ("max_time", math.nan),
                                           ("max_time", "1"), ("binary", 1)])
def test_bad_option_names_it(tmp_path, option, value):
    write_split(tmp_path)
    with pytest.raises(ValueError, match=f"SHD {option} must"):
        load_shd(tmp_path, **{option: value})


def bad_layout(path, **datasets):
    """A file with only the given datasets (name -> array, or (object array, vlen base dtype))."""
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            if isinstance(data, tuple):
                f.create_dataset(name, data=data[0], dtype=h5py.vlen_dtype(data[1]))
            else:
                f.create_dataset(name, data=data)
    return path


GOOD_TIMES = (ragged([[0.1], [0.2]], np.float32), np.float32)
GOOD_UNITS = (ragged([[1], [2]], np.uint16), np.uint16)
GOOD_LABELS = np.array([1, 2], dtype=np.uint8)


def damage_heap(path):
    """A valid file whose global heap (holding the variable-length arrays) lost its signature."""
    raw = write_shd(path, **TRAIN).read_bytes()
    path.write_bytes(raw.replace(b"GCOL", b"XXXX", 1))


def sample_file(path, times, units, labels=(1, 2), time_dtype=np.float32, unit_dtype=np.int32):
    return write_shd(path, times, units, labels, time_dtype, unit_dtype)


BAD_FILES = {
    "not HDF5": (lambda p: p.write_bytes(b"just text\n" * 10), "not a readable HDF5 file"),
    "truncated HDF5": (lambda p: p.write_bytes(write_shd(p, **TRAIN).read_bytes()[:1000]),
                       "not a readable HDF5 file"),
    "damaged heap": (damage_heap, "corrupt HDF5 file ("),
    "no spikes/times": (lambda p: bad_layout(p, **{"spikes/units": GOOD_UNITS, "labels": GOOD_LABELS}),
                        "no dataset 'spikes/times'"),
    "no spikes/units": (lambda p: bad_layout(p, **{"spikes/times": GOOD_TIMES, "labels": GOOD_LABELS}),
                        "no dataset 'spikes/units'"),
    "no spikes group": (lambda p: bad_layout(p, labels=GOOD_LABELS), "no dataset 'spikes/times'"),
    "no labels": (lambda p: bad_layout(p, **{"spikes/times": GOOD_TIMES, "spikes/units": GOOD_UNITS}),
                  "no dataset 'labels'"),
    "times not ragged": (lambda p: bad_layout(p, **{"spikes/times": np.zeros((2, 3)), "spikes/units": GOOD_UNITS,
                                                    "labels": GOOD_LABELS}),
                         "'spikes/times' is not a 1-D list of variable-length float values"),
    "float units": (lambda p: bad_layout(p, **{"spikes/times": GOOD_TIMES, "labels": GOOD_LABELS,
                                               "spikes/units": (ragged([[1.0], [2.0]], np.float32), np.float32)}),
                    "'spikes/units' is not a 1-D list of variable-length integer values (shape (2,), "
                    "dtype variable-length float32"),
    "float labels": (lambda p: bad_layout(p, **{"spikes/times": GOOD_TIMES, "spikes/units": GOOD_UNITS,
                                                "labels": np.array([1.0, 2.0])}),
                     "'labels' is not a 1-D list of integer values (shape (2,), dtype float64"),
    "length mismatch": (lambda p: sample_file(p, [[0.1], [0.2, 0.3]], [[1], [2]]),
                        "sample 1 has 2 spike times but 1 units"),
    "unit 700": (lambda p: sample_file(p, [[0.1], [0.2]], [[1], [700]]), "sample 1 has unit 700 outside 0..699"),
    "negative unit": (lambda p: sample_file(p, [[0.1], [0.2]], [[-1], [2]]), "sample 0 has unit -1 outside"),
    "negative time": (lambda p: sample_file(p, [[0.1], [-0.5]], [[1], [2]]), "sample 1 has spike time -0.5"),
    "NaN time": (lambda p: sample_file(p, [[np.nan], [0.2]], [[1], [2]]), "sample 0 has spike time nan"),
    "infinite time": (lambda p: sample_file(p, [[0.1], [np.inf]], [[1], [2]]), "sample 1 has spike time inf"),
    "label 20": (lambda p: sample_file(p, [[0.1], [0.2]], [[1], [2]], labels=(0, 20)), "labels outside 0..19"),
    "label -1": (lambda p: sample_file(p, [[0.1], [0.2]], [[1], [2]], labels=np.array([-1, 0], np.int8)),
                 "labels outside 0..19"),
    "count mismatch": (lambda p: sample_file(p, [[0.1], [0.2]], [[1], [2]], labels=(1,)),
                       "sample counts disagree: 2 in spikes/times, 2 in spikes/units, 1 labels"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_names_it(tmp_path, case):
    make, message = BAD_FILES[case]
    path = tmp_path / "shd_train.h5"
    make(path)
    with pytest.raises(DatasetError, match="shd_train.h5") as caught:
        read_shd(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_bad_gzip_names_it(tmp_path):
    path = tmp_path / "shd_train.h5.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(DatasetError, match="shd_train.h5.gz: not a readable gzipped HDF5 file"):
        read_shd(path)
    path.write_bytes(gzip.compress(write_shd(tmp_path / "x.h5", **TRAIN).read_bytes())[:-20])
    with pytest.raises(DatasetError, match="shd_train.h5.gz: not a readable gzipped HDF5 file"):
        read_shd(path)


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(DatasetError, match=r"missing .*shd_train.h5\[.gz\].*SHD.*zenkelab.org/datasets"):
        load_shd(tmp_path)
    write_shd(tmp_path / "shd_train.h5", **TRAIN)
    with pytest.raises(DatasetError, match=r"missing .*shd_test.h5\[.gz\].*compneuro.net"):
        load_shd(tmp_path)
    monkeypatch.delenv("SPIKEACC_DATA", raising=False)
    with pytest.raises(DatasetError, match="no data directory; pass --data-dir"):
        load_shd()


def test_missing_h5py_says_how_to_install(tmp_path, monkeypatch):
    write_split(tmp_path)
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(DatasetError, match=r"needs h5py: pip install 'spikeacc\[shd\]'"):
        load_shd(tmp_path)


def write_learnable(folder, per_class=3):
    """Classes 0 and 1: bursts on channel 10 or 600 in the first 0.2 s."""
    spikes = {c: ([[0.01 * k for k in range(20)]] * per_class, [[10 + 590 * c] * 20] * per_class)
              for c in (0, 1)}
    split = {"times": spikes[0][0] + spikes[1][0], "units": spikes[0][1] + spikes[1][1],
             "labels": [0] * per_class + [1] * per_class}
    return write_split(folder, split, split)


def test_cli_trains_on_shd(tmp_path, capsys):
    from test_cli import in_process, one_error_line
    data = write_learnable(tmp_path / "data")
    common = ["train", "--dataset", "shd", "--data-dir", str(data), "--model", "mlp", "--epochs", "1",
              "--hidden", "8", "--batch-size", "4", "--method", "bptt", "--T", "4"]
    assert in_process(*common, "--dataset-option", "max_time=0.2", "--out", str(tmp_path / "a")) == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert (metrics["T"], metrics["dataset_options"], metrics["n_train"]) == (4, {"max_time": 0.2}, 6)
    capsys.readouterr()
    assert in_process(*common, "--augment", "single-spike-mnist", "--out", str(tmp_path / "d")) == 2
    assert one_error_line(capsys.readouterr().err) == (
        "spikeacc: error: --augment single-spike-mnist transforms images [C, H, W]; 'shd' samples are [700]")
    (data / "shd_test.h5").write_bytes(b"garbage")
    assert in_process(*common, "--out", str(tmp_path / "b")) == 2
    assert "shd_test.h5: not a readable HDF5 file" in one_error_line(capsys.readouterr().err)
    assert in_process(*common, "--dataset-option", "binary=2", "--out", str(tmp_path / "c")) == 2
    assert "dataset 'shd' option binary='2': expected one of true, false" in one_error_line(capsys.readouterr().err)
