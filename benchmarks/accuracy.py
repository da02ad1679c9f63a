"""Accuracy and spike counts from real training runs (``spikeacc.trainer``), the figures
of the issues that need training rather than timing:

* fashion: Fashion-MNIST, MLP 784-800-10, T = 6, 5 epochs, batch 128, Adam 1e-3, direct
  input, every method: each >= 85%; SAF-E and SAF-F within 1 point of OTTT-A; ASF-BP
  within 2 points of BPTT. OTTT-O takes T Adam steps per batch, and Adam's step does not
  shrink with its per-step loss (1/T of the total), so it runs at lr 1e-3 / T: the same
  movement per batch as the methods that step once.
* digits: scikit-learn's 8x8 digits, MLP 64-256-10, T = 6, 20 epochs: ASF-BP within 2
  points of BPTT.
* single: Fashion-MNIST 784-1000-10 with latency coding (T = 16): single-spike >= 85% in
  <= 10 epochs, and its hidden spikes per sample >= 80% fewer than a multi-spike LIF
  network of the same size trained with BPTT on the same input.

Groups can run on their own (``--group fashion``) and write results/accuracy_<group>.json,
.md and .png (test accuracy per epoch of every method).
Epoch times in these tables come from the training runs (machine named); compare step
times with the saf_family benchmark, which times methods round-robin.
"""
from __future__ import annotations

import json
from pathlib import Path

from spikeacc.data import DatasetError
from spikeacc.report import plot_comparison
from spikeacc.trainer import TrainConfig, train

from . import common

FASHION = dict(dataset="fashion-mnist", model="mlp", hidden=(800,), T=6, epochs=5, batch_size=128, lr=1e-3)
GROUPS = {
    "fashion": [dict(FASHION, method=m, lr=FASHION["lr"] / FASHION["T"] if m == "ottt-o" else FASHION["lr"])
                for m in ("bptt", "ottt-o", "ottt-a", "sr", "saf-e", "saf-f", "asf")],
    "digits": [dict(dataset="digits", model="mlp", hidden=(256,), T=6, epochs=20, batch_size=64, method=m)
               for m in ("bptt", "asf", "saf-f")],
    "single": [dict(dataset="fashion-mnist", model="mlp", hidden=(1000,), T=16, epochs=5, batch_size=128,
                    encoder="latency", method=m) for m in ("single-spike", "bptt")],
}


def run_group(group: str, out: Path, quick: bool) -> list[dict]:
    rows = []
    for spec in GROUPS[group]:
        if quick:
            spec = dict(spec, epochs=1, limit_train=512, limit_test=256)
        run_dir = out / "runs" / f"{group}-{spec['method']}"
        metrics = train(TrainConfig(**spec, out=str(run_dir)), progress=False)
        rows.append({key: metrics[key] for key in (
            "method", "dataset", "model", "hidden", "T", "lr", "epochs_done", "encoder", "test_acc",
            "final_test_acc", "epoch_time_s", "spikes_per_sample", "peak_memory_mib")})
    return rows


def targets(group: str, rows: list[dict]) -> list[common.Target]:
    acc = {row["method"]: 100 * row["final_test_acc"] for row in rows}
    checks = []
    if group == "fashion":
        checks += [common.Target(f"{m} test accuracy (%)", ">= 85", acc[m], acc[m] >= 85) for m in acc]
        for m in ("saf-e", "saf-f"):
            gap = acc[m] - acc["ottt-a"]
            checks.append(common.Target(f"{m} - ottt-a (points)", ">= -1", gap, gap >= -1))
    if group in ("fashion", "digits"):
        gap = acc["asf"] - acc["bptt"]
        checks.append(common.Target(f"{group}: asf - bptt (points)", ">= -2", gap, gap >= -2))
    if group == "single":
        spikes = {row["method"]: row["spikes_per_sample"][0] for row in rows}
        fewer = 1 - spikes["single-spike"] / spikes["bptt"]
        checks += [common.Target("single-spike test accuracy (%)", ">= 85", acc["single-spike"],
                                 acc["single-spike"] >= 85),
                   common.Target("hidden spikes, single-spike vs BPTT (fraction fewer)", ">= 0.8",
                                 fewer, fewer >= 0.8)]
    return checks


def markdown(group: str, rows: list[dict], checks: list[common.Target], machine: dict) -> str:
    table = common.markdown_table(
        ["method", "dataset", "model", "T", "Adam lr", "epochs", "encoder", "test acc per epoch (%)", "final (%)",
         "s / epoch (mean)", "hidden spikes / sample", "peak RSS (MiB)"],
        [[r["method"], r["dataset"], f"{r['model']} {r['hidden']}", r["T"], f"{r['lr']:.3g}", r["epochs_done"], r["encoder"],
          " ".join(f"{100 * a:.2f}" for a in r["test_acc"]), f"{100 * r['final_test_acc']:.2f}",
          f"{sum(r['epoch_time_s']) / len(r['epoch_time_s']):.1f}",
          " / ".join(f"{s:.1f}" for s in r["spikes_per_sample"]), f"{r['peak_memory_mib']:.0f}"]
         for r in rows])
    lines = [f"# Training runs: {group}\n", f"Machine: {common.machine_line(machine)}.\n",
             "## Targets\n", *[f"- {c.line()}" for c in checks], "", table]
    return "\n".join(lines)


def build_parser():
    parser = common.base_parser("accuracy", __doc__.splitlines()[0])
    parser.add_argument("--group", choices=sorted(GROUPS), action="append",
                        help="run only this group (repeatable); default all")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = common.setup(args)
    machine = common.machine(device)
    out = common.output_dir(args)
    status = 0
    for group in args.group or list(GROUPS):
        try:
            rows = run_group(group, out, args.quick)
        except DatasetError as err:
            print(f"accuracy: group {group} skipped: {err}")
            status = 1
            continue
        checks = targets(group, rows)
        name = f"accuracy_{group}" + ("_quick" if args.quick else "")
        payload = {"group": group, "machine": machine, "rows": rows, "targets": checks}
        common.write_results(out, name, payload, markdown(group, rows, checks, machine))
        plot_comparison({r["method"]: r["test_acc"] for r in rows}, out / f"{name}.png",
                        f"{rows[0]['dataset']}, {rows[0]['model']} {rows[0]['hidden']}, T={rows[0]['T']}")
        for check in checks:
            print(check.line())
        print(json.dumps({r["method"]: round(100 * r["final_test_acc"], 2) for r in rows}))
    return status
