"""The report of a sweep, recomputed from its run directories alone (``<out>/trials/*``).

* ``trials.csv``: one row per finished trial (every epoch trained, not stopped): ``method``,
  ``T``, ``tau``, ``lam`` (1 - 1/tau), ``seed``, the other settings that vary, ``test_acc`` (the
  method's own network), ``deployed_acc`` (the trained weights run as the LIF network by
  ``spiking_inference`` with the mean readout: what a neuromorphic chip or a NIR consumer
  computes), ``gap`` (test - deployed), ``s_per_epoch``, ``peak_mem_mib`` (the trial process's
  peak RSS), ``spikes_per_sample`` (all neurons), ``run_dir``; accuracies are fractions.
* ``summary.csv`` / ``summary.md``: per configuration (everything but the seed), the mean and
  standard deviation over seeds (sample std; 0 with one seed) and the number of seeds.
* ``heatmap_accuracy.png``, ``heatmap_gap.png``: per method, mean test accuracy and mean gap
  over lambda x T; ``pareto.png``: mean test accuracy against seconds per epoch, the Pareto
  front (nothing both faster and more accurate) joined.
"""
from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

from ..checkpoint import METRICS

MEASURES = ("test_acc", "deployed_acc", "gap", "s_per_epoch", "peak_mem_mib", "spikes_per_sample")


def finished_metrics(run_dir: Path) -> dict | None:
    """The metrics of a run that trained every epoch (and measured its deployed accuracy), else None."""
    path = run_dir / METRICS
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    finished = metrics.get("deployed_test_acc") is not None and not metrics.get("stopped")
    return metrics if finished and metrics["epochs_done"] >= metrics["epochs"] else None


def finished_trials(out: Path) -> list[dict]:
    """The rows of ``trials.csv`` (module docstring), sorted by configuration and seed."""
    runs = [(path.parent, finished_metrics(path.parent)) for path in sorted((out / "trials").glob(f"*/{METRICS}"))]
    runs = [(run_dir, metrics) for run_dir, metrics in runs if metrics is not None]
    varying = [key for key in SETTINGS if len({json.dumps(metrics.get(key)) for _, metrics in runs}) > 1]
    rows = [_row(run_dir, metrics, varying) for run_dir, metrics in runs]
    return sorted(rows, key=lambda row: (*_config_key(row), row["seed"]))


# the settings of a run that make a configuration, besides method, T, tau and seed
SETTINGS = ("dataset", "model", "hidden", "v_th", "batch_size", "lr", "lr_milestones", "lr_gamma",
            "milestone_restart", "weight_decay", "augment", "encoder", "limit_train", "limit_test", "amp", "compile",
            "model_options", "method_options", "encoder_options", "dataset_options")


def _row(run_dir: Path, metrics: dict, varying: list[str]) -> dict:
    tau = metrics.get("tau", 2.0)
    return {"method": metrics["method"], "T": metrics["T"], "tau": tau, "lam": 1.0 - 1.0 / tau,
            "seed": metrics["seed"], **{key: _plain(metrics.get(key)) for key in varying},
            "test_acc": metrics["final_test_acc"], "deployed_acc": metrics["deployed_test_acc"],
            "gap": metrics["final_test_acc"] - metrics["deployed_test_acc"],
            "s_per_epoch": statistics.mean(metrics["epoch_time_s"]), "peak_mem_mib": metrics["peak_memory_mib"],
            "spikes_per_sample": sum(metrics["spikes_per_sample"]), "run_dir": str(run_dir)}


def _plain(value):
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _config_key(row: dict) -> tuple:
    return tuple(str(row[key]) for key in row if key not in ("seed", *MEASURES, "run_dir"))


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds of every measure, per configuration."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(_config_key(row), []).append(row)
    summary = []
    for members in groups.values():
        record = {key: members[0][key] for key in members[0] if key not in ("seed", *MEASURES, "run_dir")}
        record["seeds"] = len(members)
        for measure in MEASURES:
            values = [m[measure] for m in members]
            record[f"{measure}_mean"] = statistics.mean(values)
            record[f"{measure}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        summary.append(record)
    return summary


def compare(summary: list[dict], method: str, baseline: str, measure: str = "test_acc") -> list[dict]:
    """``method`` minus ``baseline`` in every configuration both trained (all other settings
    equal): the settings, ``difference`` (of the means over seeds), ``standard_error``
    (sqrt(s_a^2 / n_a + s_b^2 / n_b), the sample stds over seeds) and ``verdict``: 'higher' or
    'lower' where the difference exceeds twice its standard error, else 'noise'."""
    def settings(record: dict) -> tuple:
        return tuple((key, str(value)) for key, value in record.items()
                     if key not in ("method", "seeds") and not key.endswith(("_mean", "_std")))

    theirs = {settings(record): record for record in summary if record["method"] == baseline}
    pairs = [(mine, theirs[settings(mine)]) for mine in summary
             if mine["method"] == method and settings(mine) in theirs]
    if any(record["seeds"] < 2 for pair in pairs for record in pair):
        raise ValueError(f"{method} against {baseline}: a difference is told from seed noise only with at least "
                         "two seeds per configuration (spikeacc sweep --seeds 2 or more)")
    comparison = []
    for mine, other in pairs:
        difference = mine[f"{measure}_mean"] - other[f"{measure}_mean"]
        error = math.sqrt(mine[f"{measure}_std"] ** 2 / mine["seeds"] + other[f"{measure}_std"] ** 2 / other["seeds"])
        verdict = "higher" if difference > 2 * error else "lower" if difference < -2 * error else "noise"
        comparison.append({**{key: mine[key] for key, _ in settings(mine)}, "difference": difference, "standard_error": error,
                           "verdict": verdict})
    return comparison


def write_report(out: Path) -> list[Path]:
    """Write the report files (module docstring) into ``out``; the paths written."""
    rows = finished_trials(out)
    if not rows:
        raise ValueError(f"{out}: no finished trial (no trials/*/metrics.json of a run that trained every epoch)")
    summary = summarise(rows)
    written = [_write_csv(out / "trials.csv", rows), _write_csv(out / "summary.csv", summary),
               _write_markdown(out / "summary.md", summary)]
    written += _plots(out, summary)
    return written


def _write_csv(path: Path, records: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return path


def _write_markdown(path: Path, summary: list[dict]) -> Path:
    settings = [key for key in summary[0] if not key.endswith(("_mean", "_std")) and key not in ("lam", "seeds")]
    headers = [*settings, "seeds", "test acc (%)", "deployed acc (%)", "gap (points)", "s / epoch",
               "peak MiB", "spikes / sample"]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for record in summary:
        cells = [str(record[key]) for key in settings] + [str(record["seeds"])]
        cells += [_pm(record, "test_acc", 100, 2), _pm(record, "deployed_acc", 100, 2), _pm(record, "gap", 100, 2),
                  _pm(record, "s_per_epoch", 1, 2), _pm(record, "peak_mem_mib", 1, 0),
                  _pm(record, "spikes_per_sample", 1, 0)]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path


def _pm(record: dict, measure: str, scale: float, digits: int) -> str:
    mean, std = record[f"{measure}_mean"] * scale, record[f"{measure}_std"] * scale
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if record["seeds"] > 1 else f"{mean:.{digits}f}"


def _plots(out: Path, summary: list[dict]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for measure, title, path in (("test_acc_mean", "test accuracy (%)", out / "heatmap_accuracy.png"),
                                 ("gap_mean", "test - deployed accuracy (points)", out / "heatmap_gap.png")):
        _heatmaps(plt, summary, measure, title, path)
        paths.append(path)
    _pareto(plt, summary, out / "pareto.png")
    return [*paths, out / "pareto.png"]


def _heatmaps(plt, summary: list[dict], measure: str, title: str, path: Path) -> None:
    """One panel per method (three to a row): lambda (rows) x T (columns), the mean over seeds
    and over any other setting that varies, on one colour scale for every method."""
    methods_ = sorted({r["method"] for r in summary})
    lams, steps = sorted({r["lam"] for r in summary}), sorted({r["T"] for r in summary})
    grids = {method: [[_mean([100 * r[measure] for r in summary
                              if r["method"] == method and r["lam"] == lam and r["T"] == t])
                       for t in steps] for lam in lams] for method in methods_}
    values = [v for grid in grids.values() for row in grid for v in row if not math.isnan(v)]
    low, high = min(values), max(values)
    columns = min(3, len(methods_))
    rows = -(-len(methods_) // columns)
    fig, axes = plt.subplots(rows, columns, squeeze=False, layout="constrained",
                             figsize=(1.5 + 0.75 * len(steps) * columns, 0.9 + (0.6 + 0.45 * len(lams)) * rows))
    for ax, method in zip(axes.flat, methods_):
        image = ax.imshow(grids[method], cmap="viridis", aspect="auto", origin="lower", vmin=low, vmax=high)
        for i, row in enumerate(grids[method]):
            for j, value in enumerate(row):
                if not math.isnan(value):
                    light = high > low and (value - low) / (high - low) > 0.6  # viridis is light at the top
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if light else "white")
        ax.set_xticks(range(len(steps)), [str(t) for t in steps])
        ax.set_yticks(range(len(lams)), [f"{lam:.2f}" for lam in lams])
        ax.set_xlabel("T")
        ax.set_ylabel("λ = 1 − 1/τ")
        ax.set_title(method)
    for ax in list(axes.flat)[len(methods_):]:
        ax.set_visible(False)
    fig.colorbar(image, ax=axes, fraction=0.04, shrink=0.9)
    fig.suptitle(f"{title}, one colour scale for every method")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan


def _pareto(plt, summary: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for method in sorted({r["method"] for r in summary}):
        mine = [r for r in summary if r["method"] == method]
        ax.scatter([r["s_per_epoch_mean"] for r in mine], [100 * r["test_acc_mean"] for r in mine], label=method,
                   s=18)
    front = pareto_front(summary)
    ax.plot([r["s_per_epoch_mean"] for r in front], [100 * r["test_acc_mean"] for r in front], "k--", lw=1,
            label="Pareto front")
    ax.set_xlabel("seconds per epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_front(summary: list[dict]) -> list[dict]:
    """The configurations no other is both faster and more accurate than, by cost."""
    front, best = [], -math.inf
    for record in sorted(summary, key=lambda r: (r["s_per_epoch_mean"], -r["test_acc_mean"])):
        if record["test_acc_mean"] > best:
            front.append(record)
            best = record["test_acc_mean"]
    return front
