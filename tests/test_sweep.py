"""``spikeacc sweep`` and ``spikeacc.load_run`` (spikeacc/experiments/, spikeacc/run_dir.py).

A tiny sweep on the digits with two workers is killed after its first finished trial and
run again: every point ends with exactly one finished trial, no finished run is trained
again, the interrupted one resumes from its checkpoint. The report's numbers are
recomputed from the run directories with ``load_run``. Bad grids are one line before
anything trains. ``load_run`` gives back the trained network, the method and the test set.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import spikeacc
from spikeacc import methods

from tests.test_cli import TINY, in_process, one_error_line

REPO = Path(__file__).resolve().parents[1]
GRID = ["--method", "saf-f,bptt", "--T", "2,4", "--seeds", "1", "--epochs", "12", "--hidden", "128",
        "--workers", "2", "--heartbeat", "1"]


def sweep(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "spikeacc", "sweep", *GRID, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def commands_in(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("$ spikeacc train")]


def test_a_killed_sweep_continues_where_it_stopped(tmp_path):
    out = tmp_path / "sweep"
    first = sweep(out)
    for line in first.stdout:
        if " done (" in line:
            break
    first.send_signal(signal.SIGKILL)  # its running trials die with it (PR_SET_PDEATHSIG)
    first.wait()
    finished = {path.parent: path.stat().st_mtime_ns for path in out.glob("trials/*/metrics.json")
                if json.loads(path.read_text())["deployed_test_acc"] is not None}  # metrics of every epoch too
    assert 1 <= len(finished) < 4
    second = sweep(out)
    output, _ = second.communicate(timeout=240)
    assert second.returncode == 0, output
    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert sorted((row["method"], row["T"]) for row in rows) == sorted(
        (m, t) for m in ("saf-f", "bptt") for t in ("2", "4"))  # none lost, none twice
    for run_dir, mtime in finished.items():  # finished before the kill: not trained again
        assert (run_dir / "metrics.json").stat().st_mtime_ns == mtime
        assert len(commands_in(run_dir / "train.log")) == 1
    resumed = [path.parent for path in out.glob("trials/*/train.log") if len(commands_in(path)) > 1]
    assert all(commands_in(run_dir / "train.log")[-1].endswith("--resume") for run_dir in resumed
               if (run_dir / "checkpoint.pt").exists())
    import optuna

    study = optuna.load_study(study_name="spikeacc-sweep", storage=f"sqlite:///{out / 'sweep.db'}")
    complete = {json.dumps(t.params, sort_keys=True) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(complete) == 4  # (a run that finished as the sweep was killed may be marked done twice, trained once)


def test_the_report_is_the_run_directories(tmp_path):
    out = tmp_path / "sweep"
    assert in_process("sweep", "--method", "saf-f,bptt", "--tau", "2,3", "--T", "3", "--seeds", "2", "--epochs",
                      "2", "--limit-train", "300", "--limit-test", "120", "--hidden", "32", "--workers", "1",
                      "--out", str(out)) == 0
    rows = list(csv.DictReader((out / "trials.csv").read_text().splitlines()))
    assert len(rows) == 8 and {row["lam"] for row in rows} == {"0.5", str(1 - 1 / 3)}
    for row in rows:
        run = spikeacc.load_run(row["run_dir"])
        x, y = run.test_set()
        deployed = methods.spiking_inference(run.net, x, run.config["T"]).logits.argmax(1)
        own = run.method.infer(run.net, x).logits.argmax(1)
        assert float(row["deployed_acc"]) == pytest.approx(float((deployed == y).double().mean()), abs=1e-12)
        assert float(row["test_acc"]) == pytest.approx(float((own == y).double().mean()), abs=1e-12)
        assert float(row["gap"]) == pytest.approx(float(row["test_acc"]) - float(row["deployed_acc"]))
    summary = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert len(summary) == 4 and all(row["seeds"] == "2" for row in summary)
    for record in summary:
        mine = [float(r["test_acc"]) for r in rows if (r["method"], r["tau"]) == (record["method"], record["tau"])]
        assert float(record["test_acc_mean"]) == pytest.approx(sum(mine) / 2)
    assert all((out / name).stat().st_size > 0 for name in ("summary.md", "heatmap_accuracy.png",
                                                            "heatmap_gap.png", "pareto.png"))
    assert in_process("sweep", "--report", "--out", str(out)) == 0


@pytest.mark.parametrize("grid, message", [
    (["--nope", "1,2"], "unknown train option '--nope'"),
    (["--T", "2,,4"], "an empty alternative"),
    (["--tau", "0.5,2"], "sweep point tau=0.5: LIF tau must be > 1"),
    (["--method", "saf-f,nope"], "sweep point method=nope: argument --method: invalid choice"),
    (["--method", "saf-f,bptt", "--method-option", "surrogate=neuron,sr"],
     "sweep point method=bptt, method-option:surrogate=neuron: method 'bptt' has no option surrogate"),
    (["--resume"], "--resume is the sweep's"),
    (["--workers", "3", "--threads", "2"], "3 workers x 2 threads exceed"),
])
def test_a_bad_grid_is_one_line_before_anything_trains(grid, message, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert in_process("sweep", *grid, "--out", str(out)) == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_load_run_gives_back_the_trained_network(tmp_path):
    out = tmp_path / "run"
    assert in_process("train", *TINY, "--method", "asf", "--tau", "3", "--v-th", "0.8", "--out", str(out)) == 0
    run = spikeacc.load_run(out)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(value, run.net.state_dict()[key]) for key, value in state["model"].items())
    metrics = json.loads((out / "metrics.json").read_text())
    assert {key: run.config[key] for key in ("method", "T", "tau", "v_th", "hidden")} == {
        key: metrics[key] for key in ("method", "T", "tau", "v_th", "hidden")}
    assert run.method.name == "asf" and run.method.stats()[0]["updates"] > 0  # its fitted k came back
    x, y = run.test_set()
    assert x.shape == (metrics["n_test"], *metrics["sample_shape"]) and y.shape == (metrics["n_test"],)
    deployed = methods.spiking_inference(run.net, x, run.config["T"]).logits.argmax(1)
    assert float((deployed == y).double().mean()) == pytest.approx(metrics["deployed_test_acc"], abs=1e-12)
    with pytest.raises(ValueError, match="no checkpoint at"):
        spikeacc.load_run(tmp_path / "missing")


def test_compare_pairs_equal_settings_and_tells_a_difference_from_seed_noise():
    from spikeacc.experiments.summary import compare, summarise

    def trial(method, T, seed, accuracy):
        return {"method": method, "T": T, "tau": 2.0, "lam": 0.5, "seed": seed, "test_acc": accuracy,
                "deployed_acc": accuracy, "gap": 0.0, "s_per_epoch": 1.0, "peak_mem_mib": 1.0,
                "spikes_per_sample": 1.0}

    accuracies = {("saf-e", 2): (0.90, 0.92), ("bptt", 2): (0.80, 0.82),   # +10 points, SE 1: higher
                  ("saf-e", 4): (0.80, 0.90), ("bptt", 4): (0.84, 0.86),   # +0 points: noise
                  ("saf-e", 8): (0.70, 0.71)}                              # no BPTT at T=8: not paired
    rows = [trial(method, T, seed, a) for (method, T), pair in accuracies.items() for seed, a in enumerate(pair)]
    comparison = {pair["T"]: pair for pair in compare(summarise(rows), "saf-e", "bptt")}
    assert set(comparison) == {2, 4}
    assert comparison[2]["difference"] == pytest.approx(0.10)
    assert comparison[2]["standard_error"] == pytest.approx(0.02 ** 0.5 / 10)   # both stds 0.0141, 2 seeds
    assert [comparison[T]["verdict"] for T in (2, 4)] == ["higher", "noise"]
    assert compare(summarise(rows), "bptt", "saf-e")[0]["verdict"] == "lower"
    with pytest.raises(ValueError, match="at least two seeds"):
        compare(summarise([r for r in rows if r["seed"] == 0]), "saf-e", "bptt")
