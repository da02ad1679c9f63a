"""`python -m benchmarks saf_family --quick` runs end to end and records every method and T."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import saf_family
from benchmarks.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def test_saf_family_quick_writes_every_method_and_T(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    cmd = [sys.executable, "-m", "benchmarks", "saf_family", "--quick", "--threads", "1",
           "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    payload = json.loads((tmp_path / "saf_family.json").read_text())
    seen = {(r["model"], r["T"], r["method"]) for r in payload["results"]}
    assert seen == {(model, T, name) for model in ("mlp", "conv")
                    for T in saf_family.TIME_STEPS for name in saf_family.METHODS} | {
        (model, 6, name) for model in ("vgg-sws", "resnet") for name in saf_family.METHODS}
    assert set(saf_family.TIME_STEPS) >= {4, 6, 8, 16, 32}
    assert all(r["macs_total"] > 0 and r["step_median_s"] > 0 for r in payload["results"])
    assert payload["machine"]["cpu"] and payload["machine"]["torch"]
    assert payload["targets"]
    assert all(isinstance(t["passed"], bool) and t["measured"] > 0 for t in payload["targets"])
    markdown = (tmp_path / "saf_family.md").read_text()
    assert f"Machine: {payload['machine']['cpu']}" in markdown
    assert "| model | T | " + " | ".join(saf_family.METHODS) + " |" in markdown
    verdicts = [line for line in done.stdout.splitlines() if "PASS " in line or "MISS " in line]
    assert len(verdicts) == len(payload["targets"])
    assert "USDT" not in done.stdout + done.stderr  # the profiler's native prints are silenced


def test_results_go_to_a_new_run_directory_unless_asked(tmp_path):
    """By default a benchmark writes runs/bench-<time>/ under the working directory and
    leaves the committed benchmarks/results/ alone."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    committed = {p.name: p.stat().st_mtime_ns for p in (REPO / "benchmarks" / "results").iterdir()}
    done = subprocess.run([sys.executable, "-m", "benchmarks", "asf", "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr  # 1: a quick run misses targets
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("bench-") and (run / "asf.json").is_file() and (run / "asf.md").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in (REPO / "benchmarks" / "results").iterdir()} == committed


def test_help_lists_every_benchmarks_options(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--update-results", "--baseline", "--group", "--budget", "--chunk"):
        assert option in text, option


def test_unknown_benchmark_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["no_such_benchmark"])
    assert exit_info.value.code == 2
    assert "unknown benchmark no_such_benchmark" in capsys.readouterr().err


def test_gpu_command_without_cuda_says_so_and_measures_nothing(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: python -m benchmarks gpu measures it")
    assert main(["gpu"]) == 0
    assert "no CUDA device: nothing measured" in capsys.readouterr().out


def test_race_quick_times_every_contender_to_its_target(tmp_path):
    """`python -m benchmarks race --quick`: spikeacc's methods and the installed peers train the
    digits round-robin to 85%; every contender has a history and the ratios are written."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    cmd = [sys.executable, "-m", "benchmarks", "race", "--quick", "--threads", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    payload = json.loads((tmp_path / "race.json").read_text())
    labels = {(r["library"], r["method"]) for r in payload["results"]}
    assert {("spikeacc", m) for m in ("bptt", "saf-f", "saf-e", "ottt-a", "sr", "asf")} <= labels
    assert all(r["history"] and r["history"][-1]["seconds"] > 0 for r in payload["results"])
    assert all(t["measured"] > 0 and " / " in t["name"] for t in payload["targets"])
    assert "| contender | seconds to target |" in (tmp_path / "race.md").read_text()


def test_reviewers_counts_a_difference_as_real_only_beyond_twice_its_standard_error():
    from benchmarks import reviewers

    def trial(method, T, accuracy):
        return {"method": method, "T": T, "tau": 2.0, "lam": 0.5, "test_acc": accuracy, "gap": 0.0,
                "deployed_acc": accuracy, "s_per_epoch": 1.0, "peak_mem_mib": 1.0, "spikes_per_sample": 1.0}

    rows = ([trial("saf-e", 2, a) for a in (0.90, 0.91, 0.92)] + [trial("ottt-a", 2, a) for a in (0.80, 0.81, 0.82)]
            + [trial("saf-e", 4, a) for a in (0.80, 0.85, 0.90)] + [trial("ottt-a", 4, a) for a in (0.82, 0.84, 0.86)])
    for seed, row in enumerate(rows):
        row["seed"] = seed % 3
    table = reviewers.against_baselines(rows)
    # T=2: +10 points with SE 0.8 -> real; T=4: +1 point with SE 3.2 -> noise; no BPTT trials, no BPTT row
    assert "| saf-e − ottt-a | 2 | +5.50 | +1.00 … +10.00 | 1 | 0 | 1 |" in table
    assert "bptt" not in table


def test_floor_quick_writes_every_target_of_issue_19(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    done = subprocess.run([sys.executable, "-m", "benchmarks", "floor", "--quick", "--threads", "1", "--out",
                           str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    payload = json.loads((tmp_path / "floor.json").read_text())
    names = [t["name"] for t in payload["targets"]]
    assert len(names) == 6 and all(t["measured"] > 0 for t in payload["targets"])  # the peers are installed here
    for part in ("SAF-F step / same-size ANN step, mlp T=8", "SAF-F step / same-size ANN step, mlp T=32",
                 "BPTT step, ConvNet T=4", "BPTT step, ConvNet T=8", "BPTT peak memory", "Linear + LIF"):
        assert any(name.startswith(part) for name in names), part
    assert any(line.startswith("SAF-F step / same-size ANN step, conv T=8") for line in payload["reported"])
    assert f"Machine: {payload['machine']['cpu']}" in (tmp_path / "floor.md").read_text()
