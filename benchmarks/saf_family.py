"""The SAF family (bptt, ottt-o, ottt-a, sr, saf-e, saf-f, and asf) on an MLP and a
ConvNet (every T), and on the OTTT/SAF papers' VGG-sWS and a spiking ResNet with
CIFAR-10 shapes (T = 6).

For every method and T, in one process: time per training step (``method.step`` with
Adam; warm-up, then the median of repeats taken round-robin over the methods), peak
memory of a step and of ``loss_and_grad`` alone, and forward multiply-accumulates per
layer. Checks the issue's figures (SAF/OTTT MACs, step-time ratios at T = 6, memory
T = 32 vs T = 4) as PASS/MISS and writes results/saf_family.json and .md. The step-time
ratios compare the papers' per-step algorithms (``static_once=False``, timed beside at
T = 6), like the MAC ratios; the ratios as run are reported beside them.

    python -m benchmarks saf_family [--quick] [--device cpu|cuda] [--repeats N] [--out DIR | --update-results]
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from torch import nn

from spikeacc import graph, methods
from spikeacc.methods.base import Inputs
from spikeacc.models import MLP, ConvNet, SpikingResNet, VGGsWS
from spikeacc.profiling import count_macs, peak_memory

from .common import (Target, base_parser, machine, machine_line, markdown_table,
                     median, output_dir, setup, time_round_robin, write_results)

NAME = "saf_family"
METHODS = ("bptt", "ottt-o", "ottt-a", "sr", "saf-e", "saf-f", "asf")  # asf: ASF-BP on the same nets
TIME_STEPS = (4, 6, 8, 16, 32)
RATIO_T, RATIO_METHODS, PER_STEP = 6, ("bptt", "ottt-a", "saf-e", "saf-f"), "per-step"  # the step-time ratios
SEED = 0
LEARNING_RATE = 1e-3
IMAGE = (1, 28, 28)  # Fashion-MNIST
CIFAR = (3, 32, 32)
N_CLASSES = 10
MB = 2 ** 20


@dataclass(frozen=True)
class Workload:
    model: str
    description: str
    build: Callable[[], nn.Module]
    batch: int
    image: tuple[int, int, int] = IMAGE
    time_steps: tuple[int, ...] = TIME_STEPS
    sizes: tuple[int, ...] = ()  # hidden widths (mlp) or channels (conv)
    max_repeats: int | None = None  # the CIFAR networks take seconds per step here


def mlp(hidden: tuple[int, ...], batch: int) -> Workload:
    return Workload("mlp", f"MLP 784-{'-'.join(map(str, hidden))}-10", partial(MLP, 784, list(hidden), N_CLASSES),
                    batch, sizes=hidden)


def conv(channels: tuple[int, ...], batch: int) -> Workload:
    return Workload("conv", f"ConvNet (1,28,28) channels {channels}", partial(ConvNet, IMAGE, channels, N_CLASSES),
                    batch, sizes=channels)


def workloads(quick: bool) -> list[Workload]:
    """The MLP 784-800-10 (batch 128) and ConvNet (16, 32) (batch 32) at every T; VGG-sWS
    (batch 16) and the spiking ResNet (batch 32) on CIFAR-10 shapes at T = 6; tiny with
    ``quick``. Quick batches avoid the T values (see ``model_input``)."""
    if quick:
        return [mlp((16,), 5), conv((2, 4), 3),
                Workload("vgg-sws", "VGG-sWS (3,32,32) widths (2,2,4,4)",
                         partial(VGGsWS, CIFAR, N_CLASSES, widths=(2, 2, 4, 4)), 3, CIFAR, (6,)),
                Workload("resnet", "SpikingResNet (3,32,32) widths (2,4)",
                         partial(SpikingResNet, CIFAR, N_CLASSES, widths=(2, 4)), 3, CIFAR, (6,))]
    return [mlp((800,), 128), conv((16, 32), 32),
            Workload("vgg-sws", "VGG-sWS (OTTT's VGG-11, 3x32x32, widths 64..512)",
                     partial(VGGsWS, CIFAR, N_CLASSES), 16, CIFAR, (6,), max_repeats=5),
            Workload("resnet", "SpikingResNet (3x32x32, widths 16, 32, 64)",
                     partial(SpikingResNet, CIFAR, N_CLASSES), 32, CIFAR, (6,), max_repeats=5)]


def random_batch(batch: int, image: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] of shape [B, *image] and labels [B], fixed seed."""
    generator = torch.Generator().manual_seed(SEED)
    images = torch.rand(batch, *image, generator=generator)
    labels = torch.randint(0, N_CLASSES, (batch,), generator=generator)
    return images.to(device), labels.to(device)


def model_input(images: torch.Tensor, T: int, net: nn.Module) -> tuple[torch.Tensor, str]:
    """The static batch as the methods will read it. ``Inputs`` takes [B, 1, H, W] for a
    sequence [T, B', H, W] when B == T; then the same images go as a [T, B, ...]
    broadcast view (no copy), which every method reads as the static input."""
    if Inputs(images, T, net, graph.of(net)).static:
        return images, "static [B, ...]"
    return images.expand(T, *images.shape), "static, passed as a [T, B, ...] view (B == T)"


def measure_group(workload: Workload, T: int, device: torch.device, repeats: int,
                  warmup: int) -> list[dict]:
    """All methods on one model at one T: one record per method."""
    images, labels = random_batch(workload.batch, workload.image, device)
    setups = {}
    for name in METHODS:
        torch.manual_seed(SEED)
        net = workload.build().to(device)
        x, layout = model_input(images, T, net)
        optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
        per_step = methods.get(name, T, static_once=False)  # the papers' per-step algorithm
        setups[name] = (methods.get(name, T), net, optimizer, x, layout,
                        partial(per_step.step, net, optimizer, x, labels))
    steps = {name: partial(method.step, net, opt, x, labels)
             for name, (method, net, opt, x, _, _) in setups.items()}
    if T == RATIO_T:  # timed beside: the time ratios
        steps.update({f"{name} {PER_STEP}": setup[-1] for name, setup in setups.items() if name in RATIO_METHODS})
    seconds = time_round_robin(steps, min(repeats, workload.max_repeats or repeats), warmup, device)
    records = []
    for name, (method, net, optimizer, x, layout, per_step_step) in setups.items():
        macs = count_macs(steps[name])
        macs_per_step = count_macs(per_step_step)
        peak_step = peak_memory(steps[name], device)
        optimizer.zero_grad(set_to_none=True)
        peak_grad = peak_memory(partial(method.loss_and_grad, net, x, labels), device)
        records.append({
            "model": workload.model, "T": T, "method": name, "batch": workload.batch,
            "input": layout, "step_seconds": seconds[name], "step_median_s": median(seconds[name]),
            "step_min_s": min(seconds[name]),
            "peak_step_bytes": peak_step, "peak_grad_bytes": peak_grad,
            "macs": macs, "macs_total": sum(macs.values()),
            "macs_per_step": macs_per_step, "macs_per_step_total": sum(macs_per_step.values()),
        })
        if f"{name} {PER_STEP}" in seconds:
            per_step_seconds = seconds[f"{name} {PER_STEP}"]
            records[-1].update({"per_step_seconds": per_step_seconds, "per_step_median_s": median(per_step_seconds),
                                "per_step_min_s": min(per_step_seconds)})
    return records


class Results:
    """Look-ups into the records: ``get(model, T, method, key)``."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records
        self.index = {(r["model"], r["T"], r["method"]): r for r in records}

    def get(self, model: str, T: int, method: str, key: str) -> float:
        return self.index[(model, T, method)][key]

    def ratio(self, model: str, T: int, num: str, den: str, key: str) -> float:
        return self.get(model, T, num, key) / self.get(model, T, den, key)


def ratios(results: Results, models: list[str]) -> dict:
    """Every ratio the issue names, per model swept over T (and per T for MACs)."""
    out = {}
    for model in models:
        out[model] = {
            "macs_saf-e/ottt-a": {T: results.ratio(model, T, "saf-e", "ottt-a", "macs_per_step_total")
                                  for T in TIME_STEPS},
            "macs_saf-f/ottt-a": {T: results.ratio(model, T, "saf-f", "ottt-a", "macs_per_step_total")
                                  for T in TIME_STEPS},
            "time_T6": time_ratios(results, model, "per_step_median_s"),
            "time_T6_min": time_ratios(results, model, "per_step_min_s"),
            "time_T6_as_run": time_ratios(results, model, "step_median_s"),
            "peak_step_T32/T4": {m: results.get(model, 32, m, "peak_step_bytes")
                                 / results.get(model, 4, m, "peak_step_bytes") for m in METHODS},
            "peak_grad_T32/T4": {m: results.get(model, 32, m, "peak_grad_bytes")
                                 / results.get(model, 4, m, "peak_grad_bytes") for m in METHODS},
        }
    return out


def time_ratios(results: Results, model: str, key: str) -> dict[str, float]:
    """Step-time ratios at T = 6 that the issue names."""
    return {f"{a}/{b}": results.ratio(model, RATIO_T, a, b, key)
            for a, b in (("saf-f", "ottt-a"), ("saf-f", "bptt"), ("saf-e", "ottt-a"))}


def targets(ratio: dict) -> list[Target]:
    """The issue's "Figures it must reach" that this benchmark measures."""
    found = []
    for model, r in ratio.items():
        saf_e = r["macs_saf-e/ottt-a"].values()
        worst_e = max(saf_e, key=lambda v: abs(v - 0.5))
        found.append(Target(f"forward MACs SAF-E/OTTT-A, {model}, worst T", "= 0.5 at every T",
                            worst_e, all(abs(v - 0.5) < 1e-9 for v in saf_e)))
        worst_f = max(r["macs_saf-f/ottt-a"].values())
        found.append(Target(f"forward MACs SAF-F/OTTT-A, {model}, worst T", "<= 0.5 at every T",
                            worst_f, worst_f <= 0.5 + 1e-9))
    time_t6 = ratio["mlp"]["time_T6"]
    found += [
        Target("step time T=6 mlp SAF-F/OTTT-A, per-step algorithms", "<= 0.5", time_t6["saf-f/ottt-a"],
               time_t6["saf-f/ottt-a"] <= 0.5),
        Target("step time T=6 mlp SAF-F/BPTT, per-step algorithms", "<= 0.35", time_t6["saf-f/bptt"],
               time_t6["saf-f/bptt"] <= 0.35),
        Target("step time T=6 mlp SAF-E/OTTT-A, per-step algorithms", "< 1", time_t6["saf-e/ottt-a"],
               time_t6["saf-e/ottt-a"] < 1.0),
    ]
    for model, r in ratio.items():
        for key, what in (("peak_step_T32/T4", "training step"), ("peak_grad_T32/T4", "loss_and_grad")):
            for method in ("ottt-a", "saf-e", "saf-f"):
                value = r[key][method]
                found.append(Target(f"peak memory T=32/T=4 {method}, {model} ({what})", "<= 1.1",
                                    value, value <= 1.1))
            value = r[key]["bptt"]
            found.append(Target(f"peak memory T=32/T=4 bptt, {model} ({what})", "> 1.1 (grows)",
                                value, value > 1.1))
    return found


def markdown(payload: dict, results: Results) -> str:
    settings, models = payload["settings"], [w["model"] for w in payload["workloads"]]
    lines = [f"# Benchmark: SAF family ({'quick smoke run' if settings['quick'] else 'full run'})", "",
             f"Machine: {machine_line(payload['machine'])}.", "",
             f"Per step: `method.step` with Adam (lr {LEARNING_RATE}) on one random batch in [0, 1] "
             f"shaped like the workload's data (seed {SEED}); {settings['warmup']} warm-up steps, then the "
             f"median of {settings['repeats']} repeats (5 for the CIFAR networks) taken round-robin over "
             "the methods. Peak memory: "
             "extra bytes allocated during one step (or `loss_and_grad` alone), "
             "`spikeacc.profiling.peak_memory`. MACs: forward multiply-accumulates of every weighted "
             "op a step runs, `spikeacc.profiling.count_macs`: as run (a static input's first layer once "
             "per call) and per-step equivalent (`static_once=False`, the papers' per-step algorithms; "
             "the SAF/OTTT ratios use these). At T = 6 the per-step algorithms of "
             f"{', '.join(RATIO_METHODS)} are also timed in the same round-robin; the issue's step-time ratios "
             "use them, the ratios as run are beside.", "",
             "Workloads: " + "; ".join(f"{w['model']}: {w['description']}, batch {w['batch']}"
                                       for w in payload["workloads"]) + ".", "",
             "## Targets", ""]
    lines += [f"- {t.line()}" for t in payload["targets"]]
    sections = (("Step time (ms, median)", "step_median_s", 1e3, "{:.1f}"),
                ("Peak memory of a training step (MiB)", "peak_step_bytes", 1 / MB, "{:.2f}"),
                ("Peak memory of loss_and_grad (MiB)", "peak_grad_bytes", 1 / MB, "{:.2f}"),
                ("Forward MACs of a training step as run (millions)", "macs_total", 1e-6, "{:.1f}"),
                ("Forward MACs of a training step, per-step equivalent (millions)", "macs_per_step_total", 1e-6,
                 "{:.1f}"))
    steps_of = {w["model"]: w["time_steps"] for w in payload["workloads"]}
    for title, key, scale, fmt in sections:
        rows = [[model, T] + [fmt.format(results.get(model, T, m, key) * scale) for m in METHODS]
                for model in models for T in steps_of[model]]
        lines += ["", f"## {title}", "", markdown_table(["model", "T", *METHODS], rows)]
    lines += ["", "## Forward MACs per layer at T = 6 as run (millions)", ""]
    rows = [[model, layer] + [f"{results.get(model, 6, m, 'macs')[layer] * 1e-6:.2f}" for m in METHODS]
            for model in models for layer in results.get(model, 6, METHODS[0], "macs")]
    lines.append(markdown_table(["model", "layer", *METHODS], rows))
    lines += ["", "## Ratios", ""]
    rows = []
    for model, r in payload["ratios"].items():
        for key in ("macs_saf-e/ottt-a", "macs_saf-f/ottt-a"):
            rows.append([model, key, ", ".join(f"T={T}: {v:.4f}" for T, v in r[key].items())])
        for key, what in (("time_T6", "per-step algorithms, median"), ("time_T6_min", "per-step algorithms, min"),
                          ("time_T6_as_run", "as run, median")):
            rows.append([model, f"step time T=6 ({what})", ", ".join(f"{k}: {v:.3f}" for k, v in r[key].items())])
        for key in ("peak_step_T32/T4", "peak_grad_T32/T4"):
            rows.append([model, key, ", ".join(f"{k}: {v:.2f}" for k, v in r[key].items())])
    lines.append(markdown_table(["model", "ratio", "values"], rows))
    layouts = sorted({r["input"] for r in results.records} - {"static [B, ...]"})
    if layouts:
        lines += ["", "Note: where B == T the static batch went as a broadcast [T, B, ...] view "
                  "(`Inputs` would read [B, 1, H, W] as a sequence)."]
    return "\n".join(lines)


def build_parser():
    return base_parser(NAME, __doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = setup(args)
    repeats = args.repeats or (1 if args.quick else 21)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 2)
    torch.manual_seed(SEED)
    chosen = workloads(args.quick)
    records = []
    for workload in chosen:
        for T in workload.time_steps:
            records += measure_group(workload, T, device, repeats, warmup)
            print(f"[{NAME}] {workload.model} T={T}: " + ", ".join(
                f"{r['method']} {r['step_median_s'] * 1e3:.1f} ms" for r in records[-len(METHODS):]),
                flush=True)
    results = Results(records)
    ratio = ratios(results, [w.model for w in chosen if w.time_steps == TIME_STEPS])
    payload = {
        "benchmark": NAME, "machine": machine(device),
        "settings": {"quick": args.quick, "repeats": repeats, "warmup": warmup, "seed": SEED,
                     "optimizer": f"Adam(lr={LEARNING_RATE})", "time_steps": list(TIME_STEPS),
                     "methods": list(METHODS)},
        "workloads": [{"model": w.model, "description": w.description, "batch": w.batch,
                       "input": list(w.image), "time_steps": list(w.time_steps)} for w in chosen],
        "results": records, "ratios": ratio, "targets": targets(ratio),
    }
    json_path, md_path = write_results(output_dir(args), NAME, payload, markdown(payload, results))
    print(f"[{NAME}] {machine_line(payload['machine'])}")
    for target in payload["targets"]:
        print(f"[{NAME}] {target.line()}")
    print(f"[{NAME}] wrote {json_path} and {md_path}")
    return 0
