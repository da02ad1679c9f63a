"""Accelerated single-spike training: speed of the vectorised layer against the
sequential reference, and of Blocks against the sequential refractory LIF.

In ONE process (ratios are what count; the CPU may be shared):
1. membrane forms: forward + backward of V = causal decay convolution of a [T, 32, 100]
   current by "matmul", "conv", "chunked" and the sequential "loop" (T = 8..2048), with one
   decay shared by all neurons and with one per neuron (``trainable_decay``), the
   measurement behind ``spikeacc.neurons.single_spike.auto_form``;
2. the issue's speed-up grid: a training step (forward + backward, weight gradient
   included) of one layer, Linear(1000 -> hidden) + single-spike LIF, on Poisson input
   (rate per input uniform in [0, 0.2] per step, as the authors' 0-200 Hz at 1 ms),
   loss = sum of output spikes, for T = 8..2048 and batch 16..256. The vectorised layer
   (one product for all T, vectorised neuron) against two sequential models with the
   same spikes and gradients, named after the authors' code versions that time them:
   "v1" (FastSNN, the v1 paper's benchmark model ``LinearLIFNeurons``; also what
   snnTorch/SpikingJelly single-step code does), the Linear applied step by step and the
   sequential neuron, and "v2" (the Block code's sequential model), one product for all
   T then the sequential neuron (only the neuron is sequential).
   Also the neuron alone (the current given), the part the method vectorises;
3. Blocks (``--method blocks``'s neuron) vs the sequential refractory LIF, same layer,
   R = 4 (blocks of 5 steps), batch 32, T = 64, 256, 512: the layer's training step, the
   neuron alone, the Linear alone (forward + backward, the part both share) and an exact
   identical-spikes check (float64 currents). The bound on the layer's speed-up on this
   machine: the shared Linear costs the same in both, and a block of L = R + 1 steps can
   at best replace L sequential steps, so the step can be at most
   (Linear + sequential neuron) / (Linear + sequential neuron / L) times faster
   (``blocks_bound``); the neuron alone at most L times.
4. the training step of the single-spike paper's Fashion-MNIST network with decays per
   neuron (784-1000-10, T = 100, batch 128, Adam; the ``accuracy`` benchmark's
   ``single_authors`` group), its membranes by "auto" (the loop on CPU), "chunked" and
   "matmul", and what an epoch (469 steps) and the recipe's 140 epochs take at that rate.
Timing: warm-up, then ``repeats`` rounds that call each variant once in turn (drift on
a shared machine hits both alike); medians. Configurations whose input would exceed
``--max-elements`` or whose sequential step exceeds ``--budget`` seconds are skipped
and marked so. Writes single_spike.json, .md and single_spike_speedup.png.

    python -m benchmarks single_spike [--quick] [--device cpu|cuda] [--threads N]
        [--repeats N] [--warmup N] [--budget S] [--max-elements N] [--out DIR | --update-results]

The paper's figures are GPU figures; on a CPU the Linear(1000 -> hidden) product, common
to both variants, dominates the layer step and caps the ratio (the "neuron alone" column
shows the time axis alone).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from spikeacc import methods
from spikeacc.models import MLP
from spikeacc.neurons.blocks import blocks_lif, sequential_refractory_lif
from spikeacc.neurons.single_spike import (
    auto_form, decay_from_tau, leaky_integrate, sequential_single_spike, single_spike_lif)

from . import common

NAME = "single_spike"
TIME_STEPS = tuple(2 ** k for k in range(3, 12))  # 8 .. 2048
BATCHES = (16, 32, 64, 128, 256)
N_IN, HIDDEN = 1000, 100
N_IN_AUTHORS = 784
TAU, THRESHOLD, SCALE = 10.0, 1.0, 10.0
FORMS = ("matmul", "conv", "chunked", "loop")
SEED = 0


def build_parser() -> argparse.ArgumentParser:
    parser = common.base_parser(NAME, __doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=HIDDEN, help="neurons in the layer")
    parser.add_argument("--budget", type=float, default=4.0,
                        help="skip a configuration whose sequential step takes longer (s)")
    parser.add_argument("--max-elements", type=int, default=2 ** 27,
                        help="skip configurations with T * batch * 1000 inputs above this")
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Options with this benchmark's defaults: 3 repeats (1 with --quick), 1 warm-up call."""
    args = build_parser().parse_args(argv)
    args.device = common.setup(args)
    args.repeats = 1 if args.quick else (args.repeats or 3)
    args.warmup = 1 if args.warmup is None else args.warmup
    return args


def timed_round_robin(steps: dict[str, Callable[[], object]], args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per call; ``args.warmup`` untimed calls each first."""
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            seconds[name].append(call_seconds(step, args.device))
    return {name: statistics.median(values) for name, values in seconds.items()}


def call_seconds(step: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def poisson_input(T: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    rate = 0.2 * torch.rand(N_IN, generator=generator)  # per input, per step
    return (torch.rand(T, batch, N_IN, generator=generator) < rate).float()  # [T, B, 1000]


def vectorised_neuron(current: torch.Tensor) -> torch.Tensor:
    return single_spike_lif(current, decay_from_tau(TAU), THRESHOLD, SCALE)[0]


def sequential_neuron(current: torch.Tensor) -> torch.Tensor:
    return sequential_single_spike(current, decay_from_tau(TAU), THRESHOLD, SCALE)[0]


def layer_step(synapse: nn.Linear, x: torch.Tensor, neuron: Callable) -> Callable[[], None]:
    """Forward + backward of Linear + neuron over all T steps (one product for [T*B, 1000])."""
    def step() -> None:
        synapse.zero_grad(set_to_none=True)
        current = synapse(x.reshape(-1, x.shape[-1])).view(x.shape[0], x.shape[1], -1)  # [T, B, hidden]
        neuron(current).sum().backward()
    return step


def v1_step(synapse: nn.Linear, x: torch.Tensor, neuron: Callable) -> Callable[[], None]:
    """Forward + backward with the Linear applied step by step (T products of [B, 1000]):
    the authors' sequential benchmark model."""
    def step() -> None:
        synapse.zero_grad(set_to_none=True)
        current = torch.stack([synapse(x_t) for x_t in x])  # [T, B, hidden]
        neuron(current).sum().backward()
    return step


def neuron_step(current: torch.Tensor, neuron: Callable) -> Callable[[], None]:
    def step() -> None:
        current.grad = None
        neuron(current).sum().backward()
    return step


def measure_forms(args: argparse.Namespace) -> list[dict]:
    rows = []
    generator = torch.Generator().manual_seed(SEED)
    for T in TIME_STEPS[:3] if args.quick else TIME_STEPS:
        current = torch.randn(T, 32, args.hidden, generator=generator).to(args.device).requires_grad_(True)
        for decay in ("shared", "per neuron"):
            beta = torch.full((1 if decay == "shared" else args.hidden,), decay_from_tau(TAU), device=args.device,
                              requires_grad=True)
            steps = {}
            for form in FORMS:
                def step(form=form, beta=beta) -> None:
                    current.grad = beta.grad = None
                    leaky_integrate(current, beta, form).sum().backward()
                steps[form] = step
            if T > 512:  # the O(T^2) conv is minutes there; measured below 1024 only
                steps.pop("conv")
            seconds = timed_round_robin(steps, args)
            rows.append({"T": T, "decay": decay, "auto": auto_form(T, decay != "shared", args.device),
                         **{f"{k}_ms": 1e3 * v for k, v in seconds.items()}})
            print(f"membrane T={T}, {decay} decay: " + ", ".join(f"{k} {1e3 * v:.2f} ms" for k, v in seconds.items()),
                  flush=True)
    return rows


AUTHORS = dict(T=100, batch=128, hidden=1000, epochs=140, train_samples=60000)  # the single_authors group
AUTHORS_QUICK = dict(T=10, batch=8, hidden=50, epochs=140, train_samples=60000)


def measure_authors_step(args: argparse.Namespace) -> list[dict]:
    """One training step (zero_grad, loss and gradient, Adam) of the single_authors network
    (trained decays per neuron) on a latency-coded batch (one spike per input), its membranes
    by each form; an epoch and the recipe's epochs at that rate."""
    size = AUTHORS_QUICK if args.quick else AUTHORS
    generator = torch.Generator().manual_seed(SEED)
    times = torch.randint(0, size["T"], (size["batch"], N_IN_AUTHORS), generator=generator)
    x = torch.zeros(size["T"], size["batch"], N_IN_AUTHORS).scatter_(0, times.unsqueeze(0), 1.0).to(args.device)
    y = torch.randint(0, 10, (size["batch"],), generator=generator).to(args.device)
    steps = {}
    for form in ("auto", "chunked", "matmul"):  # chunked: what "auto" took at T = 100 before the loop
        torch.manual_seed(SEED)
        net = MLP(N_IN_AUTHORS, [size["hidden"]], 10).to(args.device)
        method = methods.get("single-spike", size["T"], trainable_decay=True, form=form)
        method.prepare(net)  # the decays per neuron, before the optimizer takes the parameters
        optimizer = torch.optim.Adam(net.parameters(), lr=2e-4)
        steps[form] = lambda method=method, net=net, optimizer=optimizer: method.step(net, optimizer, x, y)
    seconds = timed_round_robin(steps, args)
    steps_per_epoch = -(-size["train_samples"] // size["batch"])
    rows = [{"form": form, "auto_is": auto_form(size["T"], True, args.device), **size, "step_s": value,
             "steps_per_epoch": steps_per_epoch,
             "epoch_s": value * steps_per_epoch, "recipe_h": value * steps_per_epoch * size["epochs"] / 3600}
            for form, value in seconds.items()]
    print("single_authors step: " + ", ".join(f"{r['form']} {r['step_s']:.3f} s (epoch {r['epoch_s'] / 60:.1f} min)"
                                              for r in rows), flush=True)
    return rows


def measure_grid(args: argparse.Namespace) -> list[dict]:
    rows = []
    grid_T = TIME_STEPS[:3] if args.quick else TIME_STEPS
    grid_B = BATCHES[:2] if args.quick else BATCHES
    for T in grid_T:
        for batch in grid_B:
            row = {"T": T, "batch": batch}
            if T * batch * N_IN > args.max_elements:
                rows.append({**row, "skipped": f"input above --max-elements ({T * batch * N_IN:.2g})"})
                print(f"T={T} B={batch}: skipped (memory)", flush=True)
                continue
            generator = torch.Generator().manual_seed(SEED + T + batch)
            torch.manual_seed(SEED)
            synapse = nn.Linear(N_IN, args.hidden).to(args.device)
            x = poisson_input(T, batch, generator).to(args.device)
            current = torch.randn(T, batch, args.hidden, generator=generator).mul_(0.3)
            current = current.to(args.device).requires_grad_(True)
            seq_first = call_seconds(v1_step(synapse, x, sequential_neuron), args.device)
            if seq_first > args.budget:
                rows.append({**row, "skipped": f"sequential step {seq_first:.1f} s > --budget {args.budget} s"})
                print(f"T={T} B={batch}: skipped (sequential {seq_first:.1f} s)", flush=True)
                continue
            layer = timed_round_robin({"vectorised": layer_step(synapse, x, vectorised_neuron),
                                       "v1": v1_step(synapse, x, sequential_neuron),
                                       "v2": layer_step(synapse, x, sequential_neuron)}, args)
            alone = timed_round_robin({"vectorised": neuron_step(current, vectorised_neuron),
                                       "sequential": neuron_step(current, sequential_neuron)}, args)
            row.update(layer_vectorised_ms=1e3 * layer["vectorised"], layer_v2_ms=1e3 * layer["v2"],
                       layer_v1_ms=1e3 * layer["v1"],
                       v1_speedup=layer["v1"] / layer["vectorised"],
                       v2_speedup=layer["v2"] / layer["vectorised"],
                       neuron_vectorised_ms=1e3 * alone["vectorised"], neuron_sequential_ms=1e3 * alone["sequential"],
                       neuron_speedup=alone["sequential"] / alone["vectorised"])
            rows.append(row)
            print(f"T={T} B={batch}: vs v1 (FastSNN) x{row['v1_speedup']:.2f}, vs v2 (Block) "
                  f"x{row['v2_speedup']:.2f} ({row['layer_v1_ms']:.1f} / {row['layer_v2_ms']:.1f} / "
                  f"{row['layer_vectorised_ms']:.1f} ms), neuron x{row['neuron_speedup']:.2f}", flush=True)
    return rows


BLOCKS_T = (64, 256, 512)
REFRACTORY = 4


def measure_blocks(args: argparse.Namespace) -> list[dict]:
    """The Blocks rows (module docstring, 3): T = 64, 256, 512 (T = 16, 64 with --quick)."""
    return [measure_blocks_at(args, T) for T in ((16, 64) if args.quick else BLOCKS_T)]


def linear_step(synapse: nn.Linear, x: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of the Linear alone over all T steps (the part both layers share)."""
    def step() -> None:
        synapse.zero_grad(set_to_none=True)
        synapse(x.reshape(-1, x.shape[-1])).sum().backward()
    return step


def measure_blocks_at(args: argparse.Namespace, T: int, refractory: int = REFRACTORY, batch: int = 32) -> dict:
    beta = decay_from_tau(TAU)
    generator = torch.Generator().manual_seed(SEED)
    x = poisson_input(T, batch, generator).to(args.device)
    torch.manual_seed(SEED)
    synapse = nn.Linear(N_IN, args.hidden).to(args.device)
    with torch.no_grad():
        current64 = synapse.double()(x.double().reshape(T * batch, N_IN)).reshape(T, batch, -1)
    synapse.float()
    spikes_blocks = blocks_lif(current64, beta, THRESHOLD, refractory)[0]
    spikes_seq = sequential_refractory_lif(current64, beta, THRESHOLD, refractory)[0]
    mismatches = int((spikes_blocks != spikes_seq).sum())
    blocks_neuron = lambda c: blocks_lif(c, beta, THRESHOLD, refractory, SCALE)[0]  # noqa: E731
    sequential = lambda c: sequential_refractory_lif(c, beta, THRESHOLD, refractory, SCALE)[0]  # noqa: E731
    current = current64.float().requires_grad_(True)
    seconds = timed_round_robin({"blocks": layer_step(synapse, x, blocks_neuron),
                                 "sequential": layer_step(synapse, x, sequential),
                                 "linear": linear_step(synapse, x),
                                 "neuron_blocks": neuron_step(current, blocks_neuron),
                                 "neuron_sequential": neuron_step(current, sequential)}, args)
    L = refractory + 1
    result = {"T": T, "R": refractory, "batch": batch, "blocks_ms": 1e3 * seconds["blocks"],
              "sequential_ms": 1e3 * seconds["sequential"], "speedup": seconds["sequential"] / seconds["blocks"],
              "neuron_blocks_ms": 1e3 * seconds["neuron_blocks"],
              "neuron_sequential_ms": 1e3 * seconds["neuron_sequential"],
              "neuron_speedup": seconds["neuron_sequential"] / seconds["neuron_blocks"],
              "linear_ms": 1e3 * seconds["linear"],
              "blocks_bound": (seconds["linear"] + seconds["neuron_sequential"])
              / (seconds["linear"] + seconds["neuron_sequential"] / L),
              "spikes": int(spikes_seq.sum()), "spike_mismatches_float64": mismatches,
              "max_spikes_per_neuron": int(spikes_seq.sum(0).max())}
    print(f"blocks T={T} R={refractory}: layer x{result['speedup']:.2f} (bound x{result['blocks_bound']:.2f}), "
          f"neuron x{result['neuron_speedup']:.2f}, {mismatches} mismatching spikes of {result['spikes']}", flush=True)
    return result


def heatmap(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = sorted({r["T"] for r in rows})
    batches = sorted({r["batch"] for r in rows})
    grid = torch.full((len(times), len(batches)), math.nan)
    for r in rows:
        if "v1_speedup" in r:
            grid[times.index(r["T"]), batches.index(r["batch"])] = r["v1_speedup"]
    fig, ax = plt.subplots(figsize=(5, 6))
    image = ax.imshow(grid.numpy(), cmap="viridis", aspect="auto", origin="lower")
    for i in range(len(times)):
        for j in range(len(batches)):
            value = grid[i, j].item()
            ax.text(j, i, "skip" if math.isnan(value) else f"{value:.1f}", ha="center", va="center",
                    color="black" if math.isnan(value) or value >= grid.nan_to_num(0).max() / 2 else "white",
                    fontsize=8)
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_yticks(range(len(times)), [str(t) for t in times])
    ax.set_xlabel("batch")
    ax.set_ylabel("T (time steps)")
    ax.set_title("training-step speed-up, vectorised vs\nv1 (FastSNN) sequential single-spike layer")
    fig.colorbar(image, ax=ax, label="speed-up (x)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(payload: dict) -> str:
    lines = ["# Single-spike benchmark\n", f"Machine: {common.machine_line(payload['machine'])}.\n",
             f"Layer: Linear({N_IN} -> {payload['hidden']}) + single-spike LIF (tau {TAU}, threshold "
             f"{THRESHOLD}, scale {SCALE}); Poisson input; forward + backward; median of "
             f"{payload['repeats']} round-robin repeats.\n", "## Targets\n"]
    lines += [f"- {t}" for t in payload["targets"]]
    lines += ["\n## Membrane forms (forward + backward, [T, 32, hidden], ms)\n",
              "| T | decay | " + " | ".join(FORMS) + " | auto |", "|---" * (len(FORMS) + 3) + "|"]
    for r in payload["membrane_forms"]:
        cells = [f"{r[f'{f}_ms']:.2f}" if f"{f}_ms" in r else "not run" for f in FORMS]
        lines.append(f"| {r['T']} | {r.get('decay', 'shared')} | " + " | ".join(cells) + f" | {r['auto']} |")
    lines += ["\n## Speed-up grid (layer step vs v1 / vs v2; neuron alone in brackets)\n",
              "v1 (FastSNN, the v1 paper's benchmark model): the Linear step by step, then the sequential "
              "neuron; v2 (the Block code's sequential model): one product for all T, then the sequential "
              "neuron.\n",
              "| T \\ batch | " + " | ".join(str(b) for b in sorted({r['batch'] for r in payload['grid']})) + " |",
              "|---|" + "---|" * len({r['batch'] for r in payload['grid']})]
    for T in sorted({r["T"] for r in payload["grid"]}):
        cells = []
        for r in sorted((r for r in payload["grid"] if r["T"] == T), key=lambda r: r["batch"]):
            cells.append(f"x{r['v1_speedup']:.2f} / x{r['v2_speedup']:.2f} (x{r['neuron_speedup']:.1f})"
                         if "v1_speedup" in r
                         else f"skipped: {r['skipped']}")
        lines.append(f"| {T} | " + " | ".join(cells) + " |")
    lines += ["\n## Times (ms)\n", "| T | batch | layer vectorised | layer v1 | layer v2 | neuron vectorised "
              "| neuron sequential |", "|---|---|---|---|---|---|---|"]
    for r in payload["grid"]:
        if "v1_speedup" in r:
            lines.append(f"| {r['T']} | {r['batch']} | {r['layer_vectorised_ms']:.2f} | {r['layer_v1_ms']:.2f} "
                         f"| {r['layer_v2_ms']:.2f} "
                         f"| {r['neuron_vectorised_ms']:.2f} | {r['neuron_sequential_ms']:.2f} |")
    lines += ["\n## Blocks vs sequential refractory LIF\n",
              f"Layer: Linear({N_IN} -> {payload['hidden']}) + refractory LIF, R = {REFRACTORY} (blocks of "
              f"{REFRACTORY + 1} steps), batch 32. Bound: (Linear + sequential neuron) / (Linear + sequential "
              f"neuron / {REFRACTORY + 1}), the layer's speed-up if a block cost no more than one sequential step.\n",
              "| T | layer blocks (ms) | layer sequential (ms) | speed-up | bound | neuron blocks (ms) "
              "| neuron sequential (ms) | neuron speed-up | Linear alone (ms) | spikes (mismatching, float64) "
              "| most spikes of a neuron |", "|---|" + "---|" * 10]
    for b in payload["blocks"]:
        lines.append(f"| {b['T']} | {b['blocks_ms']:.1f} | {b['sequential_ms']:.1f} | x{b['speedup']:.2f} "
                     f"| x{b['blocks_bound']:.2f} | {b['neuron_blocks_ms']:.1f} | {b['neuron_sequential_ms']:.1f} "
                     f"| x{b['neuron_speedup']:.2f} | {b['linear_ms']:.1f} | {b['spikes']} "
                     f"({b['spike_mismatches_float64']}) | {b['max_spikes_per_neuron']} |")
    authors = payload["authors_step"]
    lines += ["\n## The single_authors network's training step\n",
              f"784-{authors[0]['hidden']}-10 with decays per neuron, latency-coded input, Adam (the `accuracy` "
              f"benchmark's `single_authors` group); an epoch is {authors[0]['steps_per_epoch']} steps, the recipe "
              f"{authors[0]['epochs']} epochs.\n",
              "| membrane form | T | batch | step (s) | epoch (min) | recipe (h) |", "|---|---|---|---|---|---|"]
    for r in authors:
        form = f"auto ({r['auto_is']})" if r["form"] == "auto" else r["form"]
        lines.append(f"| {form} | {r['T']} | {r['batch']} | {r['step_s']:.3f} | {r['epoch_s'] / 60:.1f} "
                     f"| {r['recipe_h']:.1f} |")
    return "\n".join(lines) + "\n"


def targets(grid: list[dict], blocks_rows: list[dict]) -> list[str]:
    out = []
    at128 = next((r for r in grid if r["T"] == 128 and r["batch"] == 32 and "v1_speedup" in r), None)
    if at128:
        verdict = "PASS" if at128["v1_speedup"] >= 10 else "MISS"
        out.append(f"{verdict} layer step vectorised vs sequential at T=128, batch 32: vs v1 (FastSNN) "
                   f"x{at128['v1_speedup']:.2f} (target >= 10), vs v2 (Block) x{at128['v2_speedup']:.2f}, "
                   f"neuron alone x{at128['neuron_speedup']:.2f}")
    blocks = blocks_rows[-1]  # the largest T (512 in a full run)
    verdict = "PASS" if blocks["speedup"] >= 5 and blocks["spike_mismatches_float64"] == 0 else "MISS"
    out.append(f"{verdict} Blocks vs sequential refractory LIF at T={blocks['T']}, R={blocks['R']}: "
               f"x{blocks['speedup']:.2f} (neuron alone x{blocks['neuron_speedup']:.2f}) with "
               f"{blocks['spike_mismatches_float64']} mismatching spikes "
               f"(target >= 5, identical spikes; bound on this machine x{blocks['blocks_bound']:.2f})")
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    forms = measure_forms(args)
    grid = measure_grid(args)
    blocks = measure_blocks(args)
    authors_step = measure_authors_step(args)
    payload = {"name": NAME, "machine": common.machine(args.device), "hidden": args.hidden, "n_in": N_IN, "repeats": args.repeats,
               "quick": args.quick, "membrane_forms": forms, "grid": grid, "blocks": blocks, "authors_step": authors_step,
               "targets": targets(grid, blocks), "seconds": time.perf_counter() - started}
    out = common.output_dir(args)
    common.write_results(out, NAME, payload, markdown(payload))
    heatmap(grid, out / f"{NAME}_speedup.png")
    print("\n".join(payload["targets"]))
    print(f"wrote {out / NAME}.json, .md, _speedup.png in {payload['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
