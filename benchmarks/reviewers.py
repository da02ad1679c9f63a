"""What the SAF paper's reviewers asked, answered by one sweep: robustness across the leak
lambda = 1 - 1/tau and T, against OTTT-A and BPTT; the accuracy lost when the trained weights
run as the deployed LIF network; seeds, so that differences can be told from noise.

Runs ``spikeacc sweep`` (resumable: the same command continues it) over methods bptt,
ottt-a, saf-e, saf-f, sr, asf; T in {1, 2, 4, 6, 8, 16}; lambda in {0.3, 0.5, 0.7, 0.9}; 3
seeds; Fashion-MNIST, MLP 784-800-10, 2 epochs, batch 128, Adam 1e-3, two workers of one
thread. Its trial directories go to ``--sweep-dir`` (checkpoints: not committed); the
report (trials.csv, summary.md, heat-maps, Pareto) and ``reviewers.md`` go to the results.

reviewers.md: per method the accuracy over the whole lambda x T grid; SAF-E and SAF-F against
OTTT-A and BPTT per cell, a difference counted as real only where it exceeds twice its
standard error over the seeds (sqrt(s_a^2/n_a + s_b^2/n_b)); the deployed gap per method and
T. ``--quick``: the digits, 2 methods x 2 T x 2 tau x 2 seeds, 2 epochs.

    python -m benchmarks reviewers [--quick] [--sweep-dir DIR] [--out DIR | --update-results]
"""
from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from spikeacc.experiments import summary, sweep

from .common import base_parser, machine, markdown_table, output_dir, report, setup

NAME = "reviewers"
TAUS = ("1.4285714285714286", "2", "3.3333333333333335", "10")  # lambda = 1 - 1/tau: 0.3, 0.5, 0.7, 0.9
FULL = ["--method", "bptt,ottt-a,saf-e,saf-f,sr,asf", "--T", "1,2,4,6,8,16",
        "--tau", ",".join(TAUS), "--seeds", "3", "--dataset", "fashion-mnist",
        "--model", "mlp", "--hidden", "800", "--epochs", "2", "--batch-size", "128", "--workers", "2"]
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
    rows = summary.finished_trials(sweep_dir)
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


def _mean(rows: list[dict], measure: str) -> float:
    return statistics.mean(row[measure] for row in rows)


def robustness(rows: list[dict]) -> str:
    """Per method: test accuracy over every lambda x T cell (mean, worst cell, best cell), and
    the deployed accuracy."""
    lines = []
    for method in sorted({row["method"] for row in rows}):
        mine = [row for row in rows if row["method"] == method]
        by_cell = [record["test_acc_mean"] for record in summary.summarise(mine)]
        lines.append((method, f"{100 * _mean(mine, 'test_acc'):.2f}", f"{100 * min(by_cell):.2f}",
                      f"{100 * max(by_cell):.2f}", f"{100 * _mean(mine, 'deployed_acc'):.2f}",
                      f"{_mean(mine, 's_per_epoch'):.2f}"))
    return "## Accuracy over the lambda x T grid\n\n" + markdown_table(
        ["method", "test acc, mean over the grid (%)", "worst cell", "best cell", "deployed acc (%)", "s / epoch"],
        lines)


def against_baselines(rows: list[dict]) -> str:
    """SAF-E and SAF-F minus OTTT-A and BPTT per (T, lambda) cell (``summary.compare``): the
    mean difference over the cells, how many cells differ by more than twice the standard
    error, and in which direction."""
    cells = summary.summarise(rows)
    lines = []
    for method, baselines in BASELINES.items():
        for baseline in baselines:
            comparison = summary.compare(cells, method, baseline)
            if not comparison:
                continue
            differences = [100 * pair["difference"] for pair in comparison]
            verdicts = [pair["verdict"] for pair in comparison]
            lines.append((f"{method} − {baseline}", len(comparison), f"{statistics.mean(differences):+.2f}",
                          f"{min(differences):+.2f} … {max(differences):+.2f}", verdicts.count("higher"),
                          verdicts.count("lower"), verdicts.count("noise")))
    return ("## SAF against OTTT-A and BPTT, cell by cell\n\nA cell's difference counts as real where it exceeds "
            "twice its standard error over the seeds.\n\n" + markdown_table(
                ["difference in test accuracy", "cells", "mean (points)", "range (points)", "higher (real)",
                 "lower (real)", "within noise"], lines))


def deployed_gap(rows: list[dict]) -> str:
    """Test minus deployed accuracy per method and T (mean over lambda and seeds)."""
    steps = sorted({row["T"] for row in rows})
    lines = []
    for method in sorted({row["method"] for row in rows}):
        cells = []
        for T in steps:
            gaps = [r["gap"] for r in rows if r["method"] == method and r["T"] == T]
            cells.append(f"{100 * statistics.mean(gaps):+.2f}" if gaps else "—")
        lines.append((method, *cells))
    return ("## The deployed gap: test accuracy minus the deployed LIF network's (points), per T\n\n" +
            markdown_table(["method", *(f"T = {T}" for T in steps)], lines))
