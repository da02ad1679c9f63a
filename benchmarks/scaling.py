"""Training throughput of 1 and 2 processes (torchrun, one thread each) on the same work.

Each measurement is one epoch of ``spikeacc train`` launched by torchrun on
Fashion-MNIST (MLP 784-800-10, T = 6, global batch 128, the first ``--samples`` training
samples; digits and a small MLP with ``--quick``), every method given; samples per second
= samples / the epoch's training time that the run records (data loading, steps and the
gradient all-reduce; not start-up or evaluation). Runs with 1 and 2 processes alternate,
``--repeats`` times each, and the medians are compared. Target (issue 10): 2 processes >=
1.6x the samples/s of 1 on this 2-core machine.

    python -m benchmarks scaling [--quick] [--repeats N] [--samples N] [--method M ...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from spikeacc.cli import int_at_least

from . import common

NAME = "scaling"
REPO = Path(__file__).resolve().parents[1]
TARGET = 1.6


def build_parser():
    parser = common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int_at_least(256), default=None,
                        help="training samples per epoch (default 12800; quick: digits' 1437)")
    parser.add_argument("--method", action="append", default=None, help="method(s) to time (default saf-f, bptt)")
    return parser


def one_epoch(method: str, processes: int, quick: bool, samples: int, out: Path) -> dict:
    """Launch one epoch with ``processes`` processes; its metrics.json."""
    data = ["--dataset", "digits", "--hidden", "64"] if quick else \
        ["--dataset", "fashion-mnist", "--hidden", "800", "--limit-train", str(samples)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "spikeacc", "train", "--method", method, *data, "--T", "6", "--epochs", "1",
           "--batch-size", "128", "--limit-test", "128", "--threads", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"scaling: torchrun failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.setup(args)
    repeats = args.repeats or (1 if args.quick else 5)
    samples = args.samples or 12800
    rows, targets = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.method or ["saf-f", "bptt"]:
            rates: dict[int, list[float]] = {1: [], 2: []}
            for repeat in range(repeats):
                for processes in (1, 2):  # alternate, so drift on a shared machine hits both
                    metrics = one_epoch(method, processes, args.quick, samples, Path(tmp) / f"{method}-{processes}-{repeat}")
                    trained = sum(metrics["train_samples_per_rank"])
                    rates[processes].append(trained / metrics["epoch_time_s"][0])
            one, two = common.median(rates[1]), common.median(rates[2])
            rows.append({"method": method, "samples_per_s_1": one, "samples_per_s_2": two, "speedup": two / one,
                         "runs_1": rates[1], "runs_2": rates[2]})
            targets.append(common.Target(f"{method}: samples/s with 2 processes / 1", f">= {TARGET}",
                                         two / one, two / one >= TARGET))
            print(f"[{NAME}] {method}: 1 process {one:.0f} samples/s, 2 processes {two:.0f}: x{two / one:.2f}",
                  flush=True)
    machine = common.machine(common.setup(args))
    workload = "digits, MLP 64-64-10" if args.quick else f"Fashion-MNIST, MLP 784-800-10, {samples} samples"
    payload = {"benchmark": NAME, "machine": machine, "workload": workload, "repeats": repeats,
               "results": rows, "targets": targets}
    table = common.markdown_table(
        ["method", "1 process (samples/s)", "2 processes (samples/s)", "speed-up"],
        [[r["method"], f"{r['samples_per_s_1']:.0f}", f"{r['samples_per_s_2']:.0f}", f"{r['speedup']:.2f}"] for r in rows])
    how = (f"One epoch of `spikeacc train` under `torchrun --standalone --nproc_per_node N`, one thread per "
           f"process, {workload}, T = 6, global batch 128; samples/s from the epoch's training time; medians "
           f"of {repeats} runs each, 1 and 2 processes alternating.")
    return common.report(args, NAME, payload, "data-parallel throughput", how, table)
