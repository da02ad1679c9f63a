"""Training throughput of 1 and 2 processes (torchrun, one thread each) on the same work.

Each measurement is one epoch of ``spikeacc train`` launched by torchrun on
Fashion-MNIST (MLP 784-800-10, T = 6, global batch 128, the first ``--samples`` training
samples; digits and a small MLP with ``--quick``), every method given; samples per second
= samples / the epoch's training time that the run records (data loading, steps and the
gradient all-reduce; not start-up or evaluation). Runs with 1 and 2 processes alternate,
``--repeats`` times each, and the medians are compared. Target (issue 10): 2 processes >=
1.6x the samples/s of 1 on this 2-core machine.

Beside it, what bounds the speed-up, measured here: one thread's training step (the
trainer's: ``method.step`` with fused Adam) at the global batch B and at B / 2, round-robin
in this process, and one all-reduce of the network's gradients between 2 gloo processes.
Two processes can at best take t(B) / (t(B / 2) + all-reduce) of one's time per batch.

    python -m benchmarks scaling [--quick] [--repeats N] [--samples N] [--method M ...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spikeacc import methods
from spikeacc.cli import int_at_least
from spikeacc.models import MLP
from spikeacc.trainer import adam

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


def _all_reduce_probe(rank: int, world_size: int, numel: int, store: str, repeats: int, out: str) -> None:
    """One process of the all-reduce timing: ``repeats`` all-reduces of ``numel`` floats."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    flat = torch.ones(numel)
    seconds = []
    for _ in range(repeats + 3):  # 3 untimed
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)
        seconds.append(time.perf_counter() - start)
    if rank == 0:
        Path(out).write_text(json.dumps(seconds[3:]))
    dist.destroy_process_group()


def all_reduce_seconds(numel: int, repeats: int) -> list[float]:
    """Seconds of each all-reduce of ``numel`` float32 between 2 gloo processes (1 thread each)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seconds.json"
        mp.spawn(_all_reduce_probe, args=(2, numel, str(Path(tmp) / "store"), repeats, str(out)), nprocs=2)
        return json.loads(out.read_text())


def step_seconds(method: str, dims: tuple[int, int, int], batch: int, repeats: int) -> dict[int, list[float]]:
    """One thread's training step (the trainer's optimizer) at ``batch`` and ``batch // 2``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    steps = {}
    for size in (batch, batch // 2):
        torch.manual_seed(0)
        net, runner = MLP(dims[0], [dims[1]], dims[2]), methods.get(method, T=6)
        optimizer = adam(net.parameters(), 1e-3, torch.device("cpu"))
        x, y = torch.rand(size, dims[0]), torch.randint(0, dims[2], (size,))
        steps[size] = lambda net=net, runner=runner, optimizer=optimizer, x=x, y=y: runner.step(net, optimizer, x, y)
    seconds = common.time_round_robin(steps, repeats, 3, torch.device("cpu"))
    torch.set_num_threads(threads)
    return seconds


def bound(method: str, quick: bool, repeats: int) -> dict:
    """The measured ceiling of the 2-process speed-up (module docstring)."""
    dims = (64, 64, 10) if quick else (784, 800, 10)
    seconds = step_seconds(method, dims, 128, repeats)
    numel = sum(p.numel() for p in MLP(dims[0], [dims[1]], dims[2]).parameters())
    reduce = common.median(all_reduce_seconds(numel, repeats))
    full, half = common.median(seconds[128]), common.median(seconds[64])
    return {"step_s_128": full, "step_s_64": half, "all_reduce_s": reduce, "gradient_floats": numel,
            "ideal": full / half, "bound": full / (half + reduce)}


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
                         "runs_1": rates[1], "runs_2": rates[2], **bound(method, args.quick, 5 * repeats + 10)})
            targets.append(common.Target(f"{method}: samples/s with 2 processes / 1", f">= {TARGET}",
                                         two / one, two / one >= TARGET))
            r = rows[-1]
            print(f"[{NAME}] {method}: 1 process {one:.0f} samples/s, 2 processes {two:.0f}: x{two / one:.2f}; "
                  f"step {1e3 * r['step_s_128']:.2f} ms at batch 128, {1e3 * r['step_s_64']:.2f} ms at 64, "
                  f"all-reduce {1e3 * r['all_reduce_s']:.2f} ms: bound x{r['bound']:.2f}", flush=True)
    machine = common.machine(common.setup(args))
    workload = "digits, MLP 64-64-10" if args.quick else f"Fashion-MNIST, MLP 784-800-10, {samples} samples"
    payload = {"benchmark": NAME, "machine": machine, "workload": workload, "repeats": repeats,
               "results": rows, "targets": targets}
    table = common.markdown_table(
        ["method", "1 process (samples/s)", "2 processes (samples/s)", "speed-up", "step, batch 128 (ms)",
         "step, batch 64 (ms)", "all-reduce of the gradients (ms)", "bound without / with the all-reduce"],
        [[r["method"], f"{r['samples_per_s_1']:.0f}", f"{r['samples_per_s_2']:.0f}", f"{r['speedup']:.2f}",
          f"{1e3 * r['step_s_128']:.2f}", f"{1e3 * r['step_s_64']:.2f}", f"{1e3 * r['all_reduce_s']:.2f}",
          f"{r['ideal']:.2f} / {r['bound']:.2f}"] for r in rows])
    how = (f"One epoch of `spikeacc train` under `torchrun --standalone --nproc_per_node N`, one thread per "
           f"process, {workload}, T = 6, global batch 128; samples/s from the epoch's training time; medians "
           f"of {repeats} runs each, 1 and 2 processes alternating. The bound: one thread's step (fused Adam) "
           f"at batch 128 and 64, round-robin in one process, and one all-reduce of the gradients between 2 gloo "
           f"processes (medians); 2 processes can at best reach t(128) / (t(64) + all-reduce).")
    return common.report(args, NAME, payload, "data-parallel throughput", how, table)
