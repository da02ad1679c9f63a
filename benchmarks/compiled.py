"""Compiled against eager: the step time of every method with ``compile=True`` (its neuron
dynamics under torch.compile, inductor) and without, on saf_family's MLP 784-800-10
(batch 128) at T = 6 and 32, in one process, round-robin; compile time excluded (warm-up
steps compile). Target (issue 9): every LIF-based method faster compiled.

    python -m benchmarks compiled [--quick] [--repeats N] [--device cpu|cuda]
"""
from __future__ import annotations

from functools import partial

import torch

from spikeacc import methods

from . import common
from .saf_family import LEARNING_RATE, METHODS, SEED, model_input, random_batch, workloads

NAME = "compiled"
LIF_BASED = ("bptt", "ottt-o", "ottt-a", "sr", "saf-e", "saf-f")


def build_parser():
    return common.base_parser(NAME, __doc__.split("\n\n")[0])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = common.setup(args)
    repeats = args.repeats or (1 if args.quick else 11)
    warmup = args.warmup if args.warmup is not None else 2  # the first calls compile
    workload = workloads(args.quick)[0]  # the MLP
    rows, targets = [], []
    for T in ((4,) if args.quick else (6, 32)):
        images, labels = random_batch(workload.batch, workload.image, device)
        steps = {}
        for name in METHODS:
            for compiled in (False, True):
                torch.manual_seed(SEED)
                net = workload.build().to(device)
                x, _ = model_input(images, T, net)
                optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
                steps[(name, compiled)] = partial(methods.get(name, T, compile=compiled).step, net, optimizer, x, labels)
        seconds = common.time_round_robin(steps, repeats, warmup, device)
        for name in METHODS:
            eager, compiled = common.median(seconds[(name, False)]), common.median(seconds[(name, True)])
            rows.append({"T": T, "method": name, "eager_s": eager, "compiled_s": compiled, "ratio": compiled / eager})
            if name in LIF_BASED:
                targets.append(common.Target(f"compiled / eager step time, {name}, T={T}", "< 1",
                                             compiled / eager, compiled < eager))
        print(f"[{NAME}] T={T}: " + ", ".join(f"{r['method']} x{r['ratio']:.2f}" for r in rows[-len(METHODS):]),
              flush=True)
    machine = common.machine(device)
    payload = {"benchmark": NAME, "machine": machine, "workload": workload.description, "batch": workload.batch,
               "repeats": repeats, "warmup": warmup, "results": rows, "targets": targets}
    table = common.markdown_table(
        ["T", "method", "eager (ms)", "compiled (ms)", "compiled / eager"],
        [[r["T"], r["method"], f"{r['eager_s'] * 1e3:.1f}", f"{r['compiled_s'] * 1e3:.1f}", f"{r['ratio']:.2f}"]
         for r in rows])
    how = (f"{workload.description}, batch {workload.batch}; `method.step` with Adam; {warmup} warm-up steps "
           f"(they compile), then the median of {repeats} rounds over every method, eager and compiled.")
    return common.report(args, NAME, payload, "compiled against eager", how, table)
