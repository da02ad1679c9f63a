"""spikeacc train / bench end to end on the bundled digits, with tiny settings."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from spikeacc import cli, methods
from spikeacc.methods.saf import SAFF
from spikeacc.trainer import TrainConfig, atomic_write

REPO = Path(__file__).resolve().parents[1]
# one thread: the same sums in and out of process, and no warning when the shared machine is busy
TINY = ["--epochs", "2", "--T", "2", "--limit-train", "256", "--limit-test", "100", "--threads", "1", "--hidden", "32"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def float32_default():
    """In-process runs must match subprocess runs even if another test module changed
    torch's default dtype at import."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture(autouse=True)
def same_threads_after():
    """An in-process run's --threads does not outlive its test."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def spikeacc(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "spikeacc", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def in_process(*args: str) -> int:
    """cli.main in this process: the exit code (0 on a normal return)."""
    try:
        return cli.main(list(args))
    except SystemExit as stop:
        return stop.code


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spikeacc: error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    done = spikeacc("train", *TINY, "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "epoch 1/2" in done.stdout and "epoch 2/2" in done.stdout and "test acc" in done.stdout
    assert done.stdout.splitlines()[-1] == (f"wrote {out / 'checkpoint.pt'}, {out / 'metrics.json'}, "
                                            f"{out / 'curves.png'}, {out / 'raster.png'}")
    return out


def test_train_writes_metrics_curves_raster_checkpoint(full_run):
    metrics = json.loads((full_run / "metrics.json").read_text())
    for key in ("method", "dataset", "model", "T", "seed", "epochs", "batch_size", "lr", "train_acc",
                "test_acc", "epoch_time_s", "peak_memory_mib", "spikes_per_sample", "versions", "device_name"):
        assert key in metrics, key
    assert (metrics["method"], metrics["dataset"], metrics["T"], metrics["n_train"]) == ("saf-f", "digits", 2, 256)
    assert len(metrics["test_acc"]) == 2 and len(metrics["spikes_per_sample"]) == 1
    assert set(metrics["versions"]) == {"spikeacc", "torch", "python"} and metrics["peak_memory_mib"] > 0
    for png in ("curves.png", "raster.png"):
        assert (full_run / png).read_bytes()[:8] == PNG_MAGIC
    state = torch.load(full_run / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["method"] == "saf-f"
    assert sorted(p.name for p in full_run.iterdir()) == ["checkpoint.pt", "curves.png", "metrics.json", "raster.png"]


def test_resume_continues_exactly(full_run, tmp_path):
    out = str(tmp_path / "split")
    first = in_process("train", *TINY[:1], "1", *TINY[2:], "--out", out)
    assert first == 0
    assert in_process("train", *TINY, "--out", out, "--resume") == 0
    resumed = json.loads((tmp_path / "split" / "metrics.json").read_text())["history"]
    straight = json.loads((full_run / "metrics.json").read_text())["history"]
    assert len(resumed) == 2
    for a, b in zip(resumed, straight):
        for key in ("epoch", "train_loss", "train_acc", "test_acc", "spikes_per_sample"):
            assert a[key] == b[key], (key, a, b)


def test_resume_rejects_other_settings_and_missing_checkpoint(full_run, tmp_path, capsys):
    assert in_process("train", *TINY, "--T", "3", "--out", str(full_run), "--resume") == 2
    assert "settings differ" in one_error_line(capsys.readouterr().err)
    assert in_process("train", *TINY, "--out", str(tmp_path / "none"), "--resume") == 2
    assert "no checkpoint" in one_error_line(capsys.readouterr().err)


def test_resume_of_a_checkpoint_whose_config_and_weights_disagree(full_run, tmp_path, capsys):
    out = tmp_path / "edited"
    out.mkdir()
    state = torch.load(full_run / "checkpoint.pt", weights_only=True)
    state["config"]["hidden"] = [16]  # the weights are of --hidden 32
    torch.save(state, out / "checkpoint.pt")
    assert in_process("train", *TINY[:-1], "16", "--out", str(out), "--resume") == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"spikeacc: error: --resume: the weights in {out / 'checkpoint.pt'} do not fit this network (3 of another "
        "shape, e.g. 1.weight is [32, 64] there, [16, 64] here); its code or settings changed since, or the "
        "checkpoint is not this run's")


def test_resume_after_the_networks_code_changed(full_run, monkeypatch, capsys):
    from spikeacc import models

    real_mlp = models.MODELS["mlp"]

    def deeper(sample_shape, n_classes, neuron, hidden):  # one more hidden layer than when it was trained
        return real_mlp(sample_shape, n_classes, neuron, (*hidden, 8))

    monkeypatch.setitem(models.MODELS, "mlp", deeper)
    assert in_process("train", *TINY, "--out", str(full_run), "--resume") == 2
    line = one_error_line(capsys.readouterr().err)
    assert ("do not fit this network (2 missing there, e.g. 5.weight; 2 of another shape, e.g. 3.weight is "
            "[10, 32] there, [8, 32] here)") in line


def test_resume_of_a_checkpoint_older_than_a_setting_takes_its_default(full_run, tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    state = torch.load(full_run / "checkpoint.pt", weights_only=True)
    del state["config"]["compile"]  # written before --compile existed: it ran eager
    torch.save(state, out / "checkpoint.pt")
    assert in_process("train", *TINY, "--compile", "--out", str(out), "--resume") == 2
    assert "compile=False -> True" in one_error_line(capsys.readouterr().err)
    assert in_process("train", *TINY[:1], "3", *TINY[2:], "--out", str(out), "--resume") == 0
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--method", "nope"], "invalid choice: 'nope'"),
    (["--dataset", "nope"], "invalid choice: 'nope'"),
    (["--model", "nope"], "invalid choice: 'nope'"),
    (["--T", "0"], "--T: must be a positive integer"),
    (["--batch-size", "0"], "--batch-size: must be a positive integer"),
    (["--epochs", "-1"], "--epochs: must be a positive integer"),
    (["--lr", "nan"], "--lr: must be a positive finite number"),
    (["--model", "conv", "--hidden", "4,4,4,4"], "too small for 4 poolings"),
    (["--hidden", "8,,8"], "--hidden: '8,,8' has an empty entry; give integers separated by single commas"),
    (["--hidden", "8,"], "--hidden: '8,' has an empty entry"),
    (["--lr-milestones", ",2"], "--lr-milestones: ',2' has an empty entry"),
    (["--encoder", "frames"], "does not fit dataset 'digits'"),
    (["--dataset", "mnist", "--data-dir", "{tmp}"], "missing {tmp}/train-images-idx3-ubyte"),
])
def test_bad_arguments_exit_2_with_one_line(args, message, tmp_path, capsys):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert in_process("train", *TINY, "--out", str(tmp_path / "out" / "run"), *args) == 2
    assert message.replace("{tmp}", str(tmp_path)) in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()  # a refused run leaves no new --out behind


def test_missing_data_subprocess_no_traceback(tmp_path):
    done = spikeacc("train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert "dataset-fashion-mnist" in one_error_line(done.stderr)


def test_divergence_keeps_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "nan"
    calls = {"n": 0}
    real_step = SAFF.step

    def step_then_nan(self, net, optimizer, x, y):  # epoch 1 = 2 batches, then NaN
        calls["n"] += 1
        loss, logits = real_step(self, net, optimizer, x, y)
        return (torch.tensor(float("nan")) if calls["n"] == 3 else loss), logits

    monkeypatch.setattr(SAFF, "step", step_then_nan)
    assert in_process("train", *TINY, "--out", str(out)) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "loss became nan at epoch 2, batch 1" in line and "epoch 1" in line
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(p).all() for p in state["model"].values())
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and "nan" in metrics["stopped"]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert (out / "curves.png").read_bytes()[:8] == PNG_MAGIC  # the finished epoch is plotted


def test_real_divergence_exit_3(tmp_path):
    out = tmp_path / "o"
    done = spikeacc("train", *TINY, "--lr", "1e36", "--out", str(out))
    assert done.returncode == 3
    line = one_error_line(done.stderr)
    assert "loss became inf" in line or "loss exploded" in line
    finished = done.stdout.count("test acc")  # epochs that ended before the loss blew up
    assert finished == json.loads((out / "metrics.json").read_text())["epochs_done"]
    if finished:
        assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == finished


def test_poisson_encoder_and_ottt_train(tmp_path):
    out = tmp_path / "p"
    assert in_process("train", *TINY, "--epochs", "1", "--method", "ottt-o", "--encoder", "poisson",
                      "--out", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["encoder"] == "poisson" and metrics["method"] == "ottt-o" and len(metrics["history"]) == 1


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"old"))

    def broken(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_bench_runs_benchmarks_package_or_says_it_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "benchmarks_root", lambda: None)
    assert in_process("bench") == 2
    assert "benchmarks/ not found" in one_error_line(capsys.readouterr().err)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "__main__.py").write_text("import sys\nsys.exit(len(sys.argv[1:]) + 5)\n")
    monkeypatch.setattr(cli, "benchmarks_root", lambda: tmp_path)
    assert in_process("bench", "--quick", "x") == 7
    assert in_process("train", "--quick") == 2
    assert "unrecognized arguments: --quick" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("threads, warned", [("2", True), ("1", False)])
def test_threads_beyond_the_free_cores_are_a_warning_and_training_goes_on(threads, warned, tmp_path, monkeypatch,
                                                                          capsys):
    from spikeacc import cores

    monkeypatch.setattr(cores, "own_cpus", lambda: {0, 1})
    monkeypatch.setattr(cores.LoadMeter, "busy_cores", lambda self: 1.0)  # another process on one of two cores
    assert in_process("train", *TINY[:1], "1", *TINY[2:], "--threads", threads, "--out", str(tmp_path / "o")) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.out
    assert captured.err.strip().splitlines() == (
        ["spikeacc: warning: torch runs 2 threads, but other processes keep 1 of this process's 2 cores busy; "
         "--threads 1 is likely faster while they run"] if warned else [])


def test_bench_help_names_spikeacc_bench():
    done = spikeacc("bench", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: spikeacc bench [-h]") and "usage: spikeacc bench saf_family" in done.stdout
    assert "usage: python -m benchmarks" not in done.stdout


def test_train_usage_names_user_models(capsys):
    assert in_process("train", "--help") == 0
    usage = capsys.readouterr().out.split("\n\n")[0]
    assert "[--model {mlp,conv,lenet5,vgg7,dvs-conv,vgg-sws,resnet}|package.module:function]" in usage


def test_model_that_does_not_fit_the_data_exit_2(tmp_path, monkeypatch, capsys):
    from torch import nn

    from spikeacc import models

    def wrong(sample_shape, n_classes, neuron, hidden):  # claims the data's shape, wants 100 inputs
        net = nn.Sequential(nn.Flatten(), nn.Linear(100, 8), models.LIF(), nn.Linear(8, n_classes))
        net.sample_shape = sample_shape
        return net

    monkeypatch.setitem(models.MODELS, "wrong", wrong)
    assert in_process("train", *TINY, "--model", "wrong", "--out", str(tmp_path / "o")) == 2
    assert "model 'wrong' does not fit 'digits' samples [1, 8, 8]" in one_error_line(capsys.readouterr().err)


def test_resume_keeps_asf_k(tmp_path):
    """ASF-BP's fitted k lives in the method; resuming must restore it, so the resumed
    history equals a straight run."""
    asf = ["--method", "asf", *TINY]
    assert in_process("train", *asf, "--out", str(tmp_path / "straight")) == 0
    assert in_process("train", *asf[:2], "--epochs", "1", *asf[4:], "--out", str(tmp_path / "split")) == 0
    assert in_process("train", *asf, "--out", str(tmp_path / "split"), "--resume") == 0
    straight, resumed = (json.loads((tmp_path / name / "metrics.json").read_text())["history"]
                         for name in ("straight", "split"))
    for a, b in zip(resumed, straight):
        for key in ("train_loss", "train_acc", "test_acc", "method_stats"):
            assert a[key] == b[key], (key, a, b)


def test_an_overflowing_learning_rate_exits_3_without_traceback(tmp_path):
    done = spikeacc("train", *TINY, "--lr", "1e38", "--out", str(tmp_path / "o"))
    assert done.returncode == 3
    assert "loss became nan" in one_error_line(done.stderr)
    assert "Traceback" not in done.stderr


def test_numeric_failure_inside_the_optimizer_exits_3_without_traceback(tmp_path, monkeypatch, capsys):
    def overflow(self, closure=None):
        raise RuntimeError("value cannot be converted to type float without overflow\nmore detail")
    monkeypatch.setattr(torch.optim.Adam, "step", overflow)
    assert in_process("train", *TINY, "--out", str(tmp_path / "o")) == 3
    line = one_error_line(capsys.readouterr().err)
    assert "training step failed at epoch 1, batch 1 (value cannot be converted" in line and "more detail" not in line


def test_method_options_reach_the_method_and_survive_resume(tmp_path):
    out = tmp_path / "decay"
    method = ["--method", "single-spike", "--encoder", "latency", "--method-option", "trainable_decay=true"]
    assert in_process("train", *method, "--epochs", "1", *TINY[2:], "--out", str(out)) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert any("single_spike.beta_raw" in key for key in state["model"])  # decays are trained weights
    assert state["config"]["method_options"] == {"trainable_decay": True}
    assert in_process("train", *method, *TINY, "--out", str(out), "--resume") == 0


BOOLEAN = "expected one of true, false, yes, no, on, off, 1, 0"


@pytest.mark.parametrize("option, message", [
    ("nope=1", "method 'saf-f' has no option nope; its options: surrogate, static_once"),
    ("novalue", "expected KEY=VALUE"),
    ("static_once=[1]", f"method 'saf-f' option static_once='[1]': {BOOLEAN}"),
    ("T=4", "--method-option T: T is a setting of the run, not a method option; give --T"),
    ("compile=true", "--method-option compile: compile is a setting of the run, not a method option; give --compile"),
])
def test_bad_method_option_exits_2(option, message, tmp_path, capsys):
    assert in_process("train", *TINY, "--method-option", option, "--out", str(tmp_path / "o")) == 2
    assert message in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("args, message", [
    (["--method", "single-spike", "--encoder", "latency", "--method-option", "trainable_decay=maybe"],
     f"method 'single-spike' option trainable_decay='maybe': {BOOLEAN}"),
    (["--method", "asf", "--method-option", "v_th=abc"], "method 'asf' option v_th='abc': expected a number"),
    (["--method", "asf", "--method-option", "chunk=1.5"],
     "method 'asf' option chunk='1.5': expected an integer or null"),
    (["--encoder", "latency", "--encoder-option", "x_silent=abc"],
     "encoder 'latency' option x_silent='abc': expected a number or null"),
    (["--encoder", "poisson", "--encoder-option", "rounding=floor"],
     "encoder 'poisson' has no option rounding; its options: scale"),
    (["--dataset-option", "frames=2"], "dataset 'digits' has no option frames; its options: none"),
    (["--encoder", "latency", "--encoder-option", "x_silent=2"],
     "linear latency coding needs 0 <= x_silent < 1 (pixels at or below it do not spike) or None, got 2.0"),
])
def test_option_values_are_read_as_their_declared_type(args, message, tmp_path, capsys):
    assert in_process("train", *TINY, *args, "--out", str(tmp_path / "o")) == 2
    assert one_error_line(capsys.readouterr().err) == f"spikeacc: error: {message}"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--model-option", "fc_bias=false"], "model 'mlp' has no option fc_bias; its options: zero_bias"),
    (["--model", "lenet5", "--model-option", "fc_bias=maybe"], f"model 'lenet5' option fc_bias='maybe': {BOOLEAN}"),
    (["--lr-milestones", "", "--milestone-restart"],
     "--milestone-restart restarts at the --lr-milestones; give them"),
    (["--weight-decay", "-1"], "argument --weight-decay: must be a finite number >= 0, got -1"),
    (["--augment", "mixup"], "argument --augment: invalid choice: 'mixup'"),
])
def test_bad_training_options_exit_2(args, message, tmp_path, capsys):
    assert in_process("train", *TINY, *args, "--out", str(tmp_path / "o")) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_a_user_model_takes_no_model_option(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_nets.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [*TINY[:-2], "--model", "my_nets:build", "--model-option", "zero_bias=true", "--out", str(tmp_path / "o")]
    assert in_process("train", *args) == 2
    assert one_error_line(capsys.readouterr().err) == (
        "spikeacc: error: --model-option applies to the ready-made models; give a user model's arguments in its "
        "call, e.g. my_nets:build(key=value)")


def test_the_authors_training_options_reach_the_run(tmp_path):
    from spikeacc.trainer import Trainer

    config = TrainConfig(T=2, limit_train=64, limit_test=32, threads=1, hidden=(32,), weight_decay=5e-4,
                         model_options=[("zero_bias", "true")], augment="single-spike-fmnist", out=str(tmp_path / "o"))
    trainer = Trainer(config, log=lambda message: None, progress=False)
    assert all(torch.equal(layer.bias, torch.zeros_like(layer.bias)) for layer in (trainer.net[1], trainer.net[3]))
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 5e-4
    assert config.record()["model_options"] == {"zero_bias": True} and config.record()["augment"] == "single-spike-fmnist"


def test_milestone_restart_goes_back_to_the_best_weights_with_a_new_adam(tmp_path):
    from spikeacc.trainer import Trainer

    config = TrainConfig(epochs=2, T=2, limit_train=256, limit_test=100, threads=1, hidden=(32,), lr_milestones=(2,),
                         milestone_restart=True, out=str(tmp_path / "o"))
    trainer = Trainer(config, log=lambda message: None, progress=False)
    trainer.run()
    best_loss, best = trainer.best
    assert best_loss == min(record["train_loss"] for record in trainer.history)
    assert all(torch.equal(value, best[name]) for name, value in trainer.net.state_dict().items())
    assert not trainer.optimizer.state and trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_milestone_restart_and_augmentation_resume_exactly(tmp_path):
    recipe = [*TINY[2:], "--epochs", "3", "--lr-milestones", "1,2", "--milestone-restart", "--augment",
              "single-spike-fmnist"]
    assert in_process("train", *recipe, "--out", str(tmp_path / "straight")) == 0
    assert in_process("train", *recipe, "--epochs", "2", "--out", str(tmp_path / "split")) == 0
    assert in_process("train", *recipe, "--out", str(tmp_path / "split"), "--resume") == 0
    straight, resumed = (json.loads((tmp_path / name / "metrics.json").read_text())["history"]
                         for name in ("straight", "split"))
    for a, b in zip(resumed, straight, strict=True):
        for key in ("train_loss", "train_acc", "test_acc", "lr"):
            assert a[key] == b[key], (key, a, b)


@pytest.mark.parametrize("word, value", [(word, False) for word in ("False", "false", "no", "OFF", "0")]
                         + [(word, True) for word in ("True", "yes", "On", "1")])
def test_every_boolean_word_means_what_it_says(word, value):
    config = TrainConfig(method="single-spike", encoder="latency", method_options=[("trainable_decay", word)],
                         encoder_options=[("x_silent", "null")])
    config.validate()
    assert config.method_options == [("trainable_decay", value)] and config.encoder_options == [("x_silent", None)]


@pytest.mark.parametrize("model, hidden", [("vgg-sws", "2,2,3,3"), ("resnet", "2,3")])
def test_papers_cifar_network_and_resnet_train_from_the_command_line(model, hidden, tmp_path):
    out = tmp_path / model
    assert in_process("train", *TINY[:-2], "--epochs", "1", "--model", model, "--hidden", hidden,
                      "--method", "saf-e", "--out", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == model and len(metrics["spikes_per_sample"]) == (4 if model == "vgg-sws" else 5)


USER_MODEL = '''
from torch import nn
from spikeacc import LIF


def build(sample_shape, n_classes):
    features = 1
    for size in sample_shape:
        features *= size
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 12), LIF(tau=3.0), nn.Linear(12, n_classes))


def not_a_module(sample_shape, n_classes):
    return 42
'''


def test_user_model_from_package_module_function(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_nets.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "user"
    assert in_process("train", *TINY[:-2], "--epochs", "1", "--model", "my_nets:build", "--out", str(out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "my_nets:build" and metrics["n_parameters"] == 64 * 12 + 12 + 12 * 10 + 10
    for spec, message in (("my_nets:nope", "has no 'nope'"), ("no_such_module:build", "cannot import"),
                          ("my_nets:not_a_module", "returned int, not an nn.Module")):
        assert in_process("train", *TINY[:-2], "--model", spec, "--out", str(tmp_path / "bad")) == 2
        assert message in one_error_line(capsys.readouterr().err)
    assert in_process("train", *TINY, "--model", "my_nets:build", "--out", str(tmp_path / "bad")) == 2
    assert "--hidden does not apply" in one_error_line(capsys.readouterr().err)


SHAPED_MODELS = '''
from torch import nn
from spikeacc import LIF


def outputs(n):
    return lambda sample_shape, n_classes: nn.Sequential(nn.Flatten(), nn.Linear(64, 12), LIF(), nn.Linear(12, n))


thirteen, five = outputs(13), outputs(5)


def per_class_column(sample_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), LIF(), nn.Linear(12, n_classes),
                         nn.Unflatten(1, (n_classes, 1)))


def no_neuron(sample_shape, n_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, n_classes))
'''


@pytest.mark.parametrize("function, shape", [("thirteen", [2, 13]), ("five", [2, 5]), ("per_class_column", [2, 10, 1])])
def test_network_whose_logits_are_not_batch_by_classes_exits_2(function, shape, tmp_path, monkeypatch, capsys):
    (tmp_path / "shaped_nets.py").write_text(SHAPED_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = f"shaped_nets:{function}"
    assert in_process("train", *TINY[:-2], "--method", "bptt", "--model", model, "--out", str(tmp_path / "o")) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"spikeacc: error: model '{model}' gives logits of shape {shape} for 2 samples; 'digits' has 10 classes, "
        "so it must give [2, 10] ([batch, classes])")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("method", methods.names())
def test_network_without_neurons_is_refused_before_training(method, tmp_path, monkeypatch, capsys):
    (tmp_path / "shaped_nets.py").write_text(SHAPED_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [*TINY[:-2], "--method", method, "--model", "shaped_nets:no_neuron", "--out", str(tmp_path / "o")]
    assert in_process("train", *args) == 2
    captured = capsys.readouterr()
    assert one_error_line(captured.err) == (
        f"spikeacc: error: {method}: the network has no spiking neuron (no spikeacc.LIF module), so it would "
        "train as a plain network; add spikeacc.LIF after its layers")
    assert "epoch" not in captured.out


def test_method_that_cannot_run_the_model_exits_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "pooled_nets.py").write_text(
        "from torch import nn\nfrom spikeacc import LIF\n\n"
        "def build(sample_shape, n_classes):\n"
        "    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), LIF(), nn.MaxPool2d(2), nn.Flatten(),\n"
        "                         nn.Linear(4 * 4 * 4, n_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [*TINY[:-2], "--epochs", "1", "--model", "pooled_nets:build"]
    assert in_process("train", *args, "--method", "saf-f", "--out", str(tmp_path / "o")) == 2
    assert "module '2' (MaxPool2d)" in one_error_line(capsys.readouterr().err)
    assert in_process("train", *args, "--method", "bptt", "--out", str(tmp_path / "o")) == 0


# --- rough edges a new user hit (issue 11) -----------------------------------------------

def test_loss_explosion_stops_with_its_own_message(tmp_path):
    done = spikeacc("train", *TINY, "--lr", "1e9", "--out", str(tmp_path / "o"))
    assert done.returncode == 3
    line = one_error_line(done.stderr)
    assert "loss exploded to" in line and "first batch's" in line, line


def test_out_that_is_a_file_exit_2(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert in_process("train", *TINY, "--out", str(tmp_path / "taken")) == 2
    assert "exists and is not a directory" in one_error_line(capsys.readouterr().err)


def test_out_that_cannot_be_written_stops_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert in_process("train", *TINY, "--out", str(tmp_path / "file" / "run")) == 2
    captured = capsys.readouterr()
    assert f"cannot write there ({tmp_path / 'file'} is not a directory)" in one_error_line(captured.err)
    assert "epoch" not in captured.out  # nothing trained


@pytest.mark.parametrize("code, reason", [(errno.EACCES, "permission denied on {out}"),
                                          (errno.EROFS, "read-only file system")])
def test_out_that_cannot_be_written_says_why(code, reason, tmp_path, monkeypatch, capsys):
    def refuse(dir):
        raise OSError(code, os.strerror(code), str(dir))
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    out = tmp_path / "o"
    assert in_process("train", *TINY, "--out", str(out)) == 2
    assert f"--out {out}: cannot write there ({reason.format(out=out)})" in one_error_line(capsys.readouterr().err)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_out_in_proc_says_its_file_system_takes_no_files(capsys):
    assert in_process("train", *TINY, "--out", "/proc") == 2
    assert one_error_line(capsys.readouterr().err) == (
        "spikeacc: error: --out /proc: cannot write there (the file system there takes no new files, like /proc)")


def test_empty_out_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert in_process("train", *TINY, "--out", "") == 2
    assert "--out is empty" in one_error_line(capsys.readouterr().err)
    assert not list(tmp_path.iterdir())


def test_resume_from_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    assert in_process("train", *TINY, "--out", str(out), "--resume") == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{out / 'checkpoint.pt'} is not a spikeacc checkpoint" in line
    assert "weights_only" not in line and "\x1b" not in line


def test_resume_needs_out(capsys):
    assert in_process("train", *TINY, "--resume") == 2
    assert "--resume needs --out" in one_error_line(capsys.readouterr().err)


def test_default_out_is_a_new_directory_and_files_follow_the_umask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    previous = os.umask(0o022)
    try:
        assert in_process("train", *TINY[:1], "1", *TINY[2:]) == 0
    finally:
        os.umask(previous)
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("saf-f-digits-")
    for name in ("metrics.json", "checkpoint.pt"):
        assert (run / name).stat().st_mode & 0o777 == 0o644


def test_stale_temporary_files_are_removed(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    stale = [out / ".checkpoint.pt.abc123.tmp", out / ".metrics.json.xyz.tmp"]
    for path in stale:
        path.write_bytes(b"half written")
    assert in_process("train", *TINY[:1], "1", *TINY[2:], "--out", str(out)) == 0
    assert not any(path.exists() for path in stale)
    assert "removed 2 temporary file(s)" in capsys.readouterr().out


def test_ctrl_c_stops_with_one_line_exit_130_and_keeps_the_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "ctrl-c"
    calls = {"n": 0}
    real_step = SAFF.step

    def step_then_interrupt(self, net, optimizer, x, y):  # epoch 1 = 2 batches, then Ctrl-C
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_step(self, net, optimizer, x, y)

    monkeypatch.setattr(SAFF, "step", step_then_interrupt)
    assert in_process("train", *TINY, "--out", str(out)) == 130
    line = one_error_line(capsys.readouterr().err)
    assert "interrupted at epoch 2, batch 1" in line and "epoch 1" in line
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_done"] == 1 and "interrupted" in metrics["stopped"]
    assert (out / "curves.png").exists()
    monkeypatch.setattr(SAFF, "step", real_step)
    assert in_process("train", *TINY, "--out", str(out), "--resume") == 0  # and it continues
    assert json.loads((out / "metrics.json").read_text())["epochs_done"] == 2


def test_learning_rate_milestones_apply_and_survive_resume(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    schedule = ["--lr-milestones", "1,2", "--lr-gamma", "0.5", "--epochs", "3"]
    assert in_process("train", *TINY[2:], *schedule, "--out", str(straight)) == 0
    history = json.loads((straight / "metrics.json").read_text())["history"]
    assert [r["lr"] for r in history] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert in_process("train", *TINY[2:], *schedule[:4], "--epochs", "2", "--out", str(split)) == 0
    assert in_process("train", *TINY[2:], *schedule, "--out", str(split), "--resume") == 0
    resumed = json.loads((split / "metrics.json").read_text())["history"]
    assert [(r["lr"], r["train_loss"]) for r in resumed] == [(r["lr"], r["train_loss"]) for r in history]
