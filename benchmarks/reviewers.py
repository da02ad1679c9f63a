"""What the SAF paper's reviewers asked, answered by one sweep: robustness across the leak
lambda = 1 - 1/tau and T, against OTTT-A and BPTT; the accuracy lost when the trained weights
run as the deployed LIF network; seeds, so that differences can be told from noise.

Runs ``spikeacc sweep`` (resumable: the same command continues it) over methods bptt,
ottt-a, saf-e, saf-f, sr, asf; T in {1, 2, 4, 6, 8, 16}; lambda in {0.3, 0.5, 0.7, 0.9}; 3
seeds; Fashion-MNIST, MLP 784-800-10, 3 epochs, batch 128, Adam 1e-3, two workers of one
thread. Its trial directories go to ``--sweep-dir`` (checkpoints: not committed); the
report (trials.csv, summary.md, heat-maps, Pareto) and ``reviewers.md`` go to the results.

reviewers.md: per method the accuracy over the whole lambda x T grid; SAF-E and SAF-F against
OTTT-A and BPTT per cell, a difference counted as real only where it exceeds twice its
standard error over the seeds (sqrt(s_a^2/n_a + s_b^2/n_b)); the deployed gap per method and
T. ``--quick``: the digits, 2 methods x 2 T x 2 tau x 2 seeds, 2 epochs.

    python -m benchmarks reviewers [--quick] [--sweep-dir DIR] [--out DIR | --update-results]
"""
from __future__ import annotations

import csv
import math
import shutil
import statistics
from pathlib import Path

from spikeacc.experiments import sweep

from .common import base_parser, machine, markdown_table, output_dir, report, setup

NAME = "reviewers"
TAUS = ("1.4285714285714286", "2", "3.3333333333333335", "10")  # lambda = 1 - 1/tau: 0.3, 0.5, 0.7, 0.9
FULL = ["--method", "bptt,ottt-a,saf-e,saf-f,sr,asf", "--T", "1,2,4,6,8,16",
        "--tau", ",".join(TAUS), "--seeds", "3", "--dataset", "fashion-mnist",
        "--model", "mlp", "--hidden", "800", "--epochs", "3", "--batch-size", "128", "--workers", "2"]
QUICK = ["--method", "bptt,saf-f", "--T", "2,4", "--tau", "2,4", "--seeds", "2", "--dataset", "digits",
         "--hidden", "64", "--epochs", "2", "--workers", "2"]
REPORT = ("trials.csv", "summary.csv", "summary.md", "heatmap_accuracy.png", "heatmap_gap.png", "pareto.png")
BASELINES = {"saf-e": ("ottt-a", "bptt"), "saf-f": ("ottt-a", "bptt")}


def build_parser():
    parser = base_parser(NAME, "the SAF paper's reviewers' questions, from one sweep")
    parser.add_argument("--sweep-dir", type=Path, default=Path("runs/reviewers-sweep"),
                        help="where the sweep's trials train (resumed when they exist)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = setup(args)
    sweep_dir = args.sweep_dir / ("quick" if args.quick else "fashion")
    sweep.main([*(QUICK if args.quick else FULL), "--out", str(sweep_dir)])
    out = output_dir(args) / NAME
    out.mkdir(parents=True, exist_ok=True)
    for name in REPORT:
        shutil.copy(sweep_dir / name, out / name)
    rows = [dict(row) for row in csv.DictReader((sweep_dir / "trials.csv").read_text().splitlines())]
    tables = "\n\n".join([robustness(rows), against_baselines(rows), deployed_gap(rows),
                          "The per-configuration means and deviations: `reviewers/summary.md`; every trial: "
                          "`reviewers/trials.csv`; heat-maps `reviewers/heatmap_accuracy.png`, "
                          "`reviewers/heatmap_gap.png`; accuracy against cost `reviewers/pareto.png`."])
    payload = {"machine": machine(device), "grid": QUICK if args.quick else FULL, "sweep_dir": str(sweep_dir),
               "trials": len(rows), "targets": []}
    how = (f"`spikeacc sweep {' '.join(QUICK if args.quick else FULL)}` ({len(rows)} finished trials). Accuracy: "
           "the method's own network on the test set after the last epoch; deployed: the same weights run by "
           "`spiking_inference` (LIF network, mean readout). Seconds per epoch come from two trials sharing the "
           "machine's two cores: compare them within this table only.")
    return report(args, NAME, payload, "what the SAF paper's reviewers asked", how, tables)


def _float(row: dict, key: str) -> float:
    return float(row[key])


def _cells(rows: list[dict]) -> dict[tuple[str, int, float], list[dict]]:
    """Trials per (method, T, lambda)."""
    cells: dict = {}
    for row in rows:
        cells.setdefault((row["method"], int(row["T"]), round(_float(row, "lam"), 3)), []).append(row)
    return cells


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def robustness(rows: list[dict]) -> str:
    """Per method: test accuracy over every lambda x T cell (mean, worst cell, best cell), and
    the deployed accuracy."""
    lines = []
    for method in sorted({row["method"] for row in rows}):
        mine = [row for row in rows if row["method"] == method]
        by_cell = [statistics.mean(_float(r, "test_acc") for r in cell) for key, cell in _cells(mine).items()]
        lines.append((method, f"{100 * statistics.mean(_float(r, 'test_acc') for r in mine):.2f}",
                      f"{100 * min(by_cell):.2f}", f"{100 * max(by_cell):.2f}",
                      f"{100 * statistics.mean(_float(r, 'deployed_acc') for r in mine):.2f}",
                      f"{statistics.mean(_float(r, 's_per_epoch') for r in mine):.2f}"))
    return "## Accuracy over the lambda x T grid\n\n" + markdown_table(
        ["method", "test acc, mean over the grid (%)", "worst cell", "best cell", "deployed acc (%)", "s / epoch"],
        lines)


def against_baselines(rows: list[dict]) -> str:
    """SAF-E and SAF-F minus OTTT-A and BPTT per (T, lambda) cell: the mean difference over the
    cells, how many cells differ by more than twice the standard error, and in which direction."""
    cells = _cells(rows)
    lines = []
    for method, baselines in BASELINES.items():
        for baseline in baselines:
            differences, above, below, cells_seen = [], 0, 0, 0
            for (name, T, lam), mine in cells.items():
                theirs = cells.get((baseline, T, lam))
                if name != method or not theirs:
                    continue
                cells_seen += 1
                (mean_a, std_a), (mean_b, std_b) = (_mean_std([_float(r, "test_acc") for r in group])
                                                    for group in (mine, theirs))
                difference = mean_a - mean_b
                error = math.sqrt(std_a ** 2 / len(mine) + std_b ** 2 / len(theirs))
                differences.append(difference)
                above += difference > 2 * error
                below += difference < -2 * error
            if cells_seen:
                lines.append((f"{method} − {baseline}", cells_seen, f"{100 * statistics.mean(differences):+.2f}",
                              f"{100 * min(differences):+.2f} … {100 * max(differences):+.2f}", above, below,
                              cells_seen - above - below))
    return ("## SAF against OTTT-A and BPTT, cell by cell\n\nA cell's difference counts as real where it exceeds "
            "twice its standard error over the seeds.\n\n" + markdown_table(
                ["difference in test accuracy", "cells", "mean (points)", "range (points)", "higher (real)",
                 "lower (real)", "within noise"], lines))


def deployed_gap(rows: list[dict]) -> str:
    """Test minus deployed accuracy per method and T (mean over lambda and seeds)."""
    steps = sorted({int(row["T"]) for row in rows})
    lines = []
    for method in sorted({row["method"] for row in rows}):
        cells = []
        for T in steps:
            gaps = [_float(r, "gap") for r in rows if r["method"] == method and int(r["T"]) == T]
            cells.append(f"{100 * statistics.mean(gaps):+.2f}" if gaps else "—")
        lines.append((method, *cells))
    return ("## The deployed gap: test accuracy minus the deployed LIF network's (points), per T\n\n" +
            markdown_table(["method", *(f"T = {T}" for T in steps)], lines))
