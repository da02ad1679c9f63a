"""ASF-BP cost versus T: forward (the no-graph IF simulation) and backward (the one graph
pass on accumulated values) per training step, LeNet-5 on 28x28 inputs, batch 32.

Run from the repository root: ``PYTHONPATH=src python -m benchmarks.asf [--quick]``.
Targets (issue 4): backward time per step at T = 100 within 1.2x of T = 10; forward
linear in T (least-squares line through the measured T's, R^2 >= 0.99). Also reports
the bytes autograd saves for the backward pass, which must not depend on T.
All configurations are timed round-robin in one process; medians are reported.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from spikeacc.methods.asf import ASF
from spikeacc.models import build

from spikeacc.cli import int_at_least

from . import common

NAME = "asf"


def build_parser() -> argparse.ArgumentParser:
    parser = common.base_parser(NAME, __doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int_at_least(1), default=None, help="batch size (default 32, quick 4)")
    parser.add_argument("--chunk", type=int_at_least(1), default=10, help="forward time steps per batched window")
    return parser


class Setup:
    """One T: the net, the method, a batch, and the three timed phases of a step."""

    def __init__(self, T: int, batch: int, chunk: int) -> None:
        torch.manual_seed(0)
        self.net = build("lenet5", (1, 28, 28), 10)
        self.method = ASF(T, chunk=chunk)
        self.x, self.y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step(self) -> dict[str, float]:
        """One training step's phases in seconds, plus the bytes saved for backward."""
        self.net.zero_grad(set_to_none=True)
        start = time.perf_counter()
        program, inputs, ctx = self.method.setup(self.net, self.x, self.y)
        flow = self.method.forward_flow(program, ctx, inputs)
        mid = time.perf_counter()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                      lambda t: t):
            logits = self.method.equivalent_network(program, ctx, flow, update_k=True)
            loss = (logits - torch.nn.functional.one_hot(self.y, 10).to(logits.dtype)).pow(2).sum(1).mean()
        loss.backward()
        end = time.perf_counter()
        spikes = float(sum(flow.counts[site.index].sum() for site in program.sites)) / len(self.y)
        return {"forward_s": mid - start, "backward_s": end - mid, "step_s": end - start,
                "saved_bytes": float(sum(saved)), "spikes_per_sample": spikes}


def measure(Ts: list[int], batch: int, chunk: int, repeats: int, warmup: int) -> dict[int, dict[str, float]]:
    setups = {T: Setup(T, batch, chunk) for T in Ts}
    for _ in range(warmup):
        for setup in setups.values():
            setup.step()
    runs: dict[int, list[dict[str, float]]] = {T: [] for T in Ts}
    for _ in range(repeats):  # round-robin: drift on a shared machine hits every T alike
        for T, setup in setups.items():
            runs[T].append(setup.step())
    summary = {}
    for T in Ts:
        summary[T] = {key: statistics.median(r[key] for r in runs[T]) for key in runs[T][0]}
        summary[T].update({f"min_{key}": min(r[key] for r in runs[T]) for key in ("forward_s", "backward_s")})
    return summary


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, R^2)."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    intercept = mean_y - slope * mean_x
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    return intercept, slope, 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def report(results: dict[int, dict[str, float]], settings: dict) -> tuple[dict, str]:
    Ts = sorted(results)
    low, high = Ts[0], Ts[-1]
    backward_ratio = results[high]["backward_s"] / results[low]["backward_s"]
    saved_ratio = results[high]["saved_bytes"] / results[low]["saved_bytes"]
    intercept, slope, r2 = linear_fit([float(T) for T in Ts], [results[T]["forward_s"] for T in Ts])
    targets = [
        {"name": f"backward T={high} / T={low}", "criterion": "<= 1.2", "measured": backward_ratio,
         "passed": backward_ratio <= 1.2},
        {"name": "forward linear in T (R^2 of a line)", "criterion": ">= 0.99", "measured": r2, "passed": r2 >= 0.99},
        {"name": f"saved bytes for backward T={high} / T={low}", "criterion": "== 1", "measured": saved_ratio,
         "passed": saved_ratio == 1.0},
    ]
    info = {**common.machine(torch.device("cpu")), "load_average_1min": os.getloadavg()[0]}
    payload = {"benchmark": NAME, "machine": info, "settings": settings,
               "results": {str(T): results[T] for T in Ts},
               "forward_fit": {"intercept_s": intercept, "slope_s_per_step": slope, "r2": r2},
               "targets": targets}
    rows = [f"| {T} | {r['forward_s'] * 1e3:.1f} ({r['min_forward_s'] * 1e3:.1f}) | {r['backward_s'] * 1e3:.1f} "
            f"({r['min_backward_s'] * 1e3:.1f}) | {r['step_s'] * 1e3:.1f} | {r['saved_bytes'] / 2 ** 20:.2f} | "
            f"{r['spikes_per_sample']:.0f} |" for T, r in results.items()]
    min_ratio = results[high]["min_backward_s"] / results[low]["min_backward_s"]
    lines = [f"# ASF-BP: cost per training step versus T ({settings['model']}, batch {settings['batch']})", "",
             f"Machine: {common.machine_line(info)}; load average {info['load_average_1min']:.1f} "
             f"when done. Medians of {settings['repeats']} "
             f"round-robin rounds; forward simulated {settings['chunk']} steps per batched window.", "",
             "| T | forward ms (min) | backward ms (min) | step ms | saved for backward MiB | spikes / sample |",
             "|---|---|---|---|---|---|", *rows, "",
             f"Forward fit: {intercept * 1e3:.1f} ms + {slope * 1e3:.2f} ms x T (R^2 {r2:.4f}). "
             f"Backward ratio of the minima: {min_ratio:.3g}. Targets use the medians.", ""]
    lines += [f"{'PASS' if t['passed'] else 'MISS'}  {t['name']}: {t['measured']:.4g} (target {t['criterion']})"
              for t in targets]
    return payload, "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common.setup(args)
    batch = args.batch or (4 if args.quick else 32)
    repeats = args.repeats or (1 if args.quick else 7)
    warmup = 1 if args.warmup is None else args.warmup
    Ts = [2, 10] if args.quick else [10, 25, 50, 100]
    settings = {"model": "lenet5", "input": "28x28 uniform [0, 1], direct (static)", "batch": batch,
                "Ts": Ts, "repeats": repeats, "warmup": warmup, "chunk": args.chunk, "v_th": 1.0}
    payload, markdown = report(measure(Ts, batch, args.chunk, repeats, warmup), settings)
    json_path, md_path = common.write_results(common.output_dir(args), NAME, payload, markdown)
    print(markdown)
    print(f"wrote {json_path} and {md_path}")
    return 0 if all(t["passed"] for t in payload["targets"]) else 1


if __name__ == "__main__":
    sys.exit(main())
