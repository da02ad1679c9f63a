"""Step time of the current code against a baseline commit, measured in one process.

The baseline's ``src/spikeacc`` is extracted with ``git archive`` into a temporary
directory and imported as the package ``spikeacc_baseline`` (spikeacc imports itself
only relatively), so both versions run side by side on the same machine, interleaved
round-robin. Workloads are saf_family's MLP 784-800-10 (batch 128) and ConvNet (16, 32)
(batch 32) on the same random Fashion-MNIST-shaped batch, with the same initial weights
(copied parameter by parameter); every method's ``step`` with Adam at every T, and the
peak memory of one ``loss_and_grad``. The new code runs twice: as users get it ("new", a
static input's first layer once, issue 9) and with ``static_once=False`` ("per-step", the
papers' per-step algorithms, what the old code ran). Targets (issue 8): new / old median
step time <= 1.10 everywhere; peak memory per-step / old <= 1.10 (the interpreter's own
memory; the default path holds the once-computed products for the call, reported beside;
ASF-BP compares new, as its old code already took the static input once).

    python -m benchmarks regression [--baseline REV] [--quick] [--repeats N] [--out DIR | --update-results]
"""
from __future__ import annotations

import importlib
import io
import subprocess
import sys
import tarfile
import tempfile
from functools import partial
from pathlib import Path

import torch

from spikeacc import methods
from spikeacc.profiling import peak_memory

from .common import Target, base_parser, machine, machine_line, markdown_table, median, output_dir, \
    setup, time_round_robin, write_results
from .saf_family import (IMAGE, LEARNING_RATE, METHODS, N_CLASSES, SEED, TIME_STEPS, model_input,
                         random_batch, workloads)

NAME = "regression"
BASELINE = "f0709f1"  # the last commit before networks became ordinary modules (issue 8)
LIMIT = 1.10
LIKE_OLD = {"asf": "new"}  # the version that runs the old algorithm where it is not per-step (ASF-BP's
# static input was already once per window)
REPO = Path(__file__).resolve().parents[1]


def load_baseline(revision: str, into: Path):
    """Import src/spikeacc at ``revision`` as the package ``spikeacc_baseline``."""
    try:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "src/spikeacc"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"error: cannot extract src/spikeacc at {revision!r} with git archive ({err})")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "src" / "spikeacc").rename(into / "spikeacc_baseline")
    sys.path.insert(0, str(into))
    return importlib.import_module("spikeacc_baseline")


def paired_steps(baseline, workload, T: int, device: torch.device) -> tuple[dict, dict]:
    """{(method, version): step callable} and {(method, version): loss_and_grad callable}
    for the old code and the new code (default and per-step), same weights."""
    images, labels = random_batch(workload.batch, workload.image, device)
    old_build = {"mlp": partial(baseline.MLP, 784, list(workload.sizes), N_CLASSES),
                 "conv": partial(baseline.ConvNet, IMAGE, workload.sizes, N_CLASSES)}[workload.model]
    steps, grads = {}, {}
    for name in METHODS:
        torch.manual_seed(SEED)
        new_net = workload.build().to(device)
        per_step_net, old_net = workload.build().to(device), old_build().to(device)
        with torch.no_grad():
            for old, per_step, new in zip(old_net.parameters(), per_step_net.parameters(), new_net.parameters(),
                                          strict=True):
                old.copy_(new)
                per_step.copy_(new)
        x, _ = model_input(images, T, new_net)
        for version, net, method in (("old", old_net, baseline.methods.get(name, T)),
                                     ("new", new_net, methods.get(name, T)),
                                     ("per-step", per_step_net, methods.get(name, T, static_once=False))):
            optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
            steps[(name, version)] = partial(method.step, net, optimizer, x, labels)
            grads[(name, version)] = partial(method.loss_and_grad, net, x, labels)
    return steps, grads


def build_parser():
    parser = base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old code")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = setup(args)
    repeats = args.repeats or (1 if args.quick else 15)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 2)
    rows, targets = [], []
    with tempfile.TemporaryDirectory() as tmp:
        baseline = load_baseline(args.baseline, Path(tmp))
        for workload in [w for w in workloads(args.quick) if w.model in ("mlp", "conv")]:
            for T in TIME_STEPS:
                steps, grads = paired_steps(baseline, workload, T, device)
                seconds = time_round_robin(steps, repeats, warmup, device)
                peaks = {key: peak_memory(fn, device) for key, fn in grads.items()}  # .grad exists: steady state
                for name in METHODS:
                    old, new = median(seconds[(name, "old")]), median(seconds[(name, "new")])
                    per_step = median(seconds[(name, "per-step")])
                    memory = peaks[(name, LIKE_OLD.get(name, "per-step"))] / peaks[(name, "old")]
                    rows.append({"model": workload.model, "T": T, "method": name, "old_s": old, "new_s": new,
                                 "per_step_s": per_step, "ratio": new / old, "per_step_ratio": per_step / old,
                                 "old_peak_bytes": peaks[(name, "old")], "new_peak_bytes": peaks[(name, "new")],
                                 "per_step_peak_bytes": peaks[(name, "per-step")], "memory_ratio": memory,
                                 "new_memory_ratio": peaks[(name, "new")] / peaks[(name, "old")]})
                    targets.append(Target(f"step time new/old {workload.model} T={T} {name}", f"<= {LIMIT}",
                                          new / old, new / old <= LIMIT))
                    targets.append(Target(f"peak memory {LIKE_OLD.get(name, 'per-step')}/old {workload.model} T={T} {name}",
                                          f"<= {LIMIT}",
                                          memory, memory <= LIMIT))
                print(f"[{NAME}] {workload.model} T={T}: " + ", ".join(
                    f"{r['method']} {r['ratio']:.2f}" for r in rows[-len(METHODS):]), flush=True)
    payload = {"benchmark": NAME, "machine": machine(device), "baseline": args.baseline,
               "settings": {"quick": args.quick, "repeats": repeats, "warmup": warmup, "seed": SEED},
               "results": rows, "targets": targets}
    table = markdown_table(
        ["model", "T", "method", "old (ms)", "new (ms)", "new / old", "per-step / old", "old peak (MiB)",
         "per-step peak (MiB)", "per-step / old", "new peak (MiB)", "new / old"],
        [[r["model"], r["T"], r["method"], f"{r['old_s'] * 1e3:.1f}", f"{r['new_s'] * 1e3:.1f}", f"{r['ratio']:.3f}",
          f"{r['per_step_ratio']:.3f}", f"{r['old_peak_bytes'] / 2 ** 20:.2f}",
          f"{r['per_step_peak_bytes'] / 2 ** 20:.2f}", f"{r['per_step_peak_bytes'] / r['old_peak_bytes']:.3f}",
          f"{r['new_peak_bytes'] / 2 ** 20:.2f}", f"{r['new_memory_ratio']:.3f}"] for r in rows])
    worst = max(rows, key=lambda r: r["ratio"])
    worst_memory = max(rows, key=lambda r: r["memory_ratio"])  # like for like: per-step (asf: new) / old
    text = "\n".join([
        f"# Benchmark: step time and peak memory against {args.baseline} ({'quick smoke run' if args.quick else 'full run'})", "",
        f"Machine: {machine_line(payload['machine'])}.", "",
        f"Old: `src/spikeacc` at {args.baseline} imported as `spikeacc_baseline`; new: this checkout as users "
        "get it; per-step: this checkout with `static_once=False` (a static input's first layer at every "
        "step, as the old code did). Same "
        f"weights and batch; `method.step` with Adam; {warmup} warm-up steps, then the median of {repeats} "
        "rounds that call old, new and per-step of every method in turn. Peak memory: extra bytes allocated "
        "during one `loss_and_grad` (`spikeacc.profiling.peak_memory`); the target compares "
        "per-step with old, the interpreter's own memory (new holds the once-computed products for the "
        "call), and new with old for asf (its old code already took a static input once).", "",
        f"Worst step time: {worst['model']} T={worst['T']} {worst['method']}: {worst['ratio']:.3f}; worst like-for-like peak "
        f"memory: {worst_memory['model']} T={worst_memory['T']} {worst_memory['method']}: "
        f"{worst_memory['memory_ratio']:.3f}; {sum(t.passed for t in targets)} of {len(targets)} within {LIMIT}.",
        "", table])
    json_path, md_path = write_results(output_dir(args), NAME, payload, text)
    print(f"[{NAME}] {machine_line(payload['machine'])}")
    print(f"[{NAME}] worst new/old: step time {worst['ratio']:.3f} ({worst['model']} T={worst['T']} "
          f"{worst['method']}), like-for-like peak memory {worst_memory['memory_ratio']:.3f} ({worst_memory['model']} "
          f"T={worst_memory['T']} {worst_memory['method']}); {sum(t.passed for t in targets)}/{len(targets)} "
          f"within {LIMIT}")
    print(f"[{NAME}] wrote {json_path} and {md_path}")
    return 0
