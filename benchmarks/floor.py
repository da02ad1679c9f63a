"""Issue 19's floor: SAF-F at the cost of an ANN step, BPTT against SpikingJelly and snnTorch,
long windows. In one process (2 threads unless --threads), each comparison's steps timed
round-robin (the median of the repeats), a peer's loss and gradients checked on float64
copies before it is timed (``peers.measure``):

1. SAF-F's step over one step of the same-size ANN (LIF -> ReLU, the same weights, batch
   and Adam): MLP 784-800-10, batch 128, T = 8 and 32 (targets <= 1.2 and <= 1.3); the
   ConvNet (16, 32), batch 32, reported; beside, on the MLP, the hidden site's C trajectory
   call alone (no graph: what SAF-F adds to the ANN's work at least), so that (ANN step +
   that call) / ANN step is the bound SAF-F's ratio can reach with this kernel;
2. BPTT's step over SpikingJelly's, ConvNet (16, 32), batch 32, T = 4 and 8 (<= 0.5);
3. BPTT's peak memory of the loss and gradient over snnTorch's, MLP T = 32 (<= 0.5), and
   spikeacc's with float spikes kept (``spike_bits=False``) beside;
4. Linear(512, 512) + LIF over T steps at batch 16 (input [T, B, 512], loss spikes.sum(),
   forward + backward) over the Linear's own forward + backward: T = 500 (<= 1.4), 100
   and 1000 reported, and the LIF's PyTorch loop (``kernels.mode = "off"``) beside.

    python -m benchmarks floor [--quick] [--device cpu|cuda] [--threads N] [--repeats N] [--out DIR | --update-results]
"""
from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from spikeacc import LIF, kernels, methods
from spikeacc.methods.online import Leaks
from spikeacc.methods.saf_fused import SiteKernel, whole_sites
from spikeacc.models import MLP, ConvNet

from . import peers
from .common import Target, base_parser, machine, machine_line, markdown_table, median, publish, setup, \
    time_round_robin
from .saf_family import IMAGE, N_CLASSES, SEED, random_batch

NAME = "floor"
THREADS = 2
MB = 2 ** 20


@dataclass(frozen=True)
class Sizes(peers.Sizes):
    features: int  # the long window's Linear(features, features)
    long_batch: int
    long_steps: tuple[int, ...]
    target_steps: int  # the long window with a target


FULL = Sizes(800, (16, 32), 128, 32, 512, 16, (100, 500, 1000), 500)
QUICK = Sizes(16, (2, 4), 5, 3, 8, 2, (5, 10), 10)


def ratios(sizes: Sizes) -> list[peers.Ratio]:
    Ratio, step, memory = peers.Ratio, "step_median_s", ("bptt memory", "mlp", 32)
    ann = [Ratio(f"SAF-F step / same-size ANN step, {model} T={T}", ("saf-f vs ann", model, T, "spikeacc", "saf-f"),
                 ("saf-f vs ann", model, T, "torch", "ann"), step, limit if model == "mlp" else None)
           for model in ("mlp", "conv") for T, limit in ((8, 1.2), (32, 1.3))]
    bptt = [Ratio(f"BPTT step, ConvNet T={T}, spikeacc / SpikingJelly", ("bptt", "conv", T, "spikeacc", "bptt"),
                  ("bptt", "conv", T, "spikingjelly", "bptt"), step, 0.5) for T in (4, 8)]
    bptt_memory = [Ratio("BPTT peak memory of loss and gradient, MLP T=32, spikeacc / snnTorch",
                         (*memory, "spikeacc", "bptt"), (*memory, "snntorch", "bptt"), "peak_grad_bytes", 0.5),
                   Ratio("BPTT peak memory of loss and gradient, MLP T=32, spikeacc with float spikes / snnTorch",
                         (*memory, "spikeacc", "bptt (float spikes)"), (*memory, "snntorch", "bptt"),
                         "peak_grad_bytes")]
    windows = [Ratio(f"Linear + LIF forward and backward / the Linear's, T={T}, {label}",
                     ("long window", "linear", T, "spikeacc", method), ("long window", "linear", T, "torch", "linear"),
                     step, 1.4 if T == sizes.target_steps and method == "lif" else None)
               for T in sizes.long_steps
               for method, label in (("lif", "C loop"), ("lif, PyTorch loop", "PyTorch loop"))]
    return ann + bptt + bptt_memory + windows


# --- the comparisons --------------------------------------------------------------------------

def ann_group(build, T: int, batch: peers.Batch, model: str = "mlp") -> peers.Group:
    """SAF-F against the same-size ANN (``peers.ann_group``); on the MLP also the hidden site's
    C trajectory call alone on W x + b computed once (the bound's numerator is its time plus
    the ANN step's, ``figures``)."""
    group = peers.ann_group(build, T, batch, model)
    if model == "mlp":
        group.contenders.append(trajectory_call(group.contenders[0].net, T, *batch))
    return group


def trajectory_call(net: nn.Module, T: int, x: torch.Tensor, y: torch.Tensor) -> peers.Contender:
    """The T SAF steps of the network's one whole site in one C call, without a graph."""
    saf_f = methods.get("saf-f", T)
    program, _, ctx = saf_f.setup(net, x, y)
    (site,) = whole_sites(program, ctx)
    unit = ctx.unit_value(program, site.input).detach()  # W x + b, [B, N]
    kernel = SiteKernel.of(site, Leaks(program, own=True), T, False)
    return peers.Contender("spikeacc", "trajectory call", copy.deepcopy(net), lambda: kernel.run(unit)[0].sum())


def memory_group(build, batch: peers.Batch, found: dict) -> peers.Group:
    """BPTT at T = 32 against the peers, and spikeacc keeping float spikes (memory only)."""
    group = peers.bptt_group("bptt memory", "mlp", build, 32, batch, found, timed=False)
    net, (x, y) = copy.deepcopy(group.contenders[0].net), batch
    floats = methods.get("bptt", 32, spike_bits=False)
    group.contenders.append(peers.Contender("spikeacc", "bptt (float spikes)", net,
                                            lambda: floats.loss_and_grad(net, x, y)[0]))
    return group


class WindowStep:
    """One forward and backward: the Linear alone, or the Linear and the LIF window (under
    ``kernels.mode`` ``mode``)."""

    def __init__(self, linear: nn.Linear, x: torch.Tensor, lif: LIF | None, mode: str = "auto") -> None:
        self.linear, self.x, self.lif, self.mode = linear, x, lif, mode

    def __call__(self) -> None:
        previous, kernels.mode = kernels.mode, self.mode
        try:
            self.linear.zero_grad(set_to_none=True)
            current = self.linear(self.x)  # [T, B, N]
            (current if self.lif is None else self.lif.run(current)).sum().backward()
        finally:
            kernels.mode = previous


def long_window(sizes: Sizes, T: int, device: torch.device, repeats: int, warmup: int) -> list[dict]:
    torch.manual_seed(SEED)
    linear = nn.Linear(sizes.features, sizes.features).to(device)
    x = torch.rand(T, sizes.long_batch, sizes.features, generator=torch.Generator().manual_seed(SEED)).to(device)
    steps = {("torch", "linear"): WindowStep(linear, x, None), ("spikeacc", "lif"): WindowStep(linear, x, LIF()),
             ("spikeacc", "lif, PyTorch loop"): WindowStep(linear, x, LIF(), "off")}
    seconds = time_round_robin(steps, repeats, warmup, device)
    return [{"comparison": "long window", "model": "linear", "T": T, "batch": sizes.long_batch, "library": library,
             "method": method, "step_seconds": seconds[(library, method)],
             "step_median_s": median(seconds[(library, method)]), "step_min_s": min(seconds[(library, method)])}
            for library, method in steps]


def plan(sizes: Sizes, found: dict, device: torch.device, dtype: torch.dtype) -> list:
    """The peers' comparisons at ``dtype``, each built when it is measured."""
    mlp = partial(peers.built, partial(MLP, 784, [sizes.hidden], N_CLASSES, sample_shape=IMAGE), device, dtype)
    conv = partial(peers.built, partial(ConvNet, IMAGE, sizes.channels, N_CLASSES), device, dtype)
    mlp_batch = peers.batch_of(random_batch(sizes.mlp_batch, IMAGE, device), dtype)
    conv_batch = peers.batch_of(random_batch(sizes.conv_batch, IMAGE, device), dtype)
    return [*(partial(ann_group, mlp, T, mlp_batch) for T in (8, 32)),
            *(partial(ann_group, conv, T, conv_batch, "conv") for T in (8, 32)),
            *(partial(peers.bptt_group, "bptt", "conv", conv, T, conv_batch, found) for T in (4, 8)),
            partial(memory_group, mlp, mlp_batch, found)]


# --- targets and report -----------------------------------------------------------------------

def figures(records: list[dict], sizes: Sizes) -> tuple[list[Target], list[str]]:
    """The targets measured (PASS/MISS), and a line for each reported ratio or figure not measured."""
    index = {peers.key_of(r): r for r in records}
    targets, reported = [], []
    for ratio in ratios(sizes):
        pair = [index.get(ratio.numerator, {}).get(ratio.key), index.get(ratio.denominator, {}).get(ratio.key)]
        if None in pair or pair[1] == 0:
            reported.append(f"{ratio.name}: not measured ({ratio.denominator[3]} not installed or not agreeing)")
        elif ratio.limit is None:
            reported.append(f"{ratio.name}: {pair[0] / pair[1]:.4g} (reported)")
        else:
            value = pair[0] / pair[1]
            targets.append(Target(ratio.name, f"<= {ratio.limit:g}", value, value <= ratio.limit))
    return targets, reported + bounds(index)


def bounds(index: dict) -> list[str]:
    """SAF-F's bound on the MLP: (ANN step + the hidden site's C trajectory call) / ANN step."""
    lines = []
    for T in (8, 32):
        call, ann, saf_f = (index.get(("saf-f vs ann", "mlp", T, library, method), {}).get("step_median_s")
                            for library, method in (("spikeacc", "trajectory call"), ("torch", "ann"),
                                                    ("spikeacc", "saf-f")))
        if None not in (call, ann, saf_f):
            lines.append(f"SAF-F bound, mlp T={T}: (ANN step + its C trajectory call) / ANN step = {1 + call / ann:.4g}; "
                         f"the rest of SAF-F's step beyond ANN + call: {(saf_f - ann - call) * 1e3:.2f} ms")
    return lines


def row(record: dict) -> list:
    step = record.get("step_median_s")
    peak = record.get("peak_grad_bytes")
    return [record["comparison"], record["model"], record["T"], record["batch"], record["library"], record["method"],
            f"{step * 1e3:.2f}" if step else "", f"{record['step_min_s'] * 1e3:.2f}" if step else "",
            f"{peak / MB:.2f}" if peak is not None else ""]


def markdown(payload: dict) -> str:
    settings, load = payload["settings"], payload["load_average_1min"]
    lines = [f"# Benchmark: issue 19's floor ({'quick smoke run' if settings['quick'] else 'full run'})", "",
             f"Machine: {machine_line(payload['machine'])}; load average (1 min) {load['start']:.1f} at the start, "
             f"{load['end']:.1f} at the end.", "",
             "Peers: " + (", ".join(f"{k} {v}" for k, v in payload["peers"].items()) or "none installed") + ".", "",
             f"Each comparison in one process: {settings['warmup']} warm-up steps, then the median of "
             f"{settings['repeats']} steps taken round-robin. A step: zero_grad, loss and gradient, Adam "
             "(the long windows: the forward and backward alone). Peers checked on float64 copies first "
             "(`benchmarks/peers.py`). Peak memory: `spikeacc.profiling.peak_memory` of the loss and gradient "
             "from gradients set to None.", "", "## Targets", ""]
    lines += [f"- {t.line()}" for t in payload["targets"]] + ["", "## Reported", ""]
    lines += [f"- {line}" for line in payload["reported"]]
    lines += ["", "## Step time and peak memory", "", markdown_table(
        ["comparison", "model", "T", "batch", "library", "method", "median (ms)", "min (ms)",
         "peak loss and gradient (MiB)"], [row(r) for r in payload["results"]])]
    return "\n".join(lines)


def build_parser():
    parser = base_parser(NAME, __doc__.split("\n\n")[0])
    parser.set_defaults(threads=THREADS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = setup(args)
    sizes = QUICK if args.quick else FULL
    repeats, warmup = peers.repeats_and_warmup(args)
    load_before = os.getloadavg()
    found, _ = peers.available_peers(NAME)
    records = peers.measure_groups(plan(sizes, found, device, torch.float32),
                                   plan(sizes, found, device, peers.CHECK_DTYPE), device, repeats, warmup)
    for T in sizes.long_steps:
        records += long_window(sizes, T, device, repeats, warmup)
        print(f"[{NAME}] long window T={T}: " + ", ".join(f"{r['method']} {r['step_median_s'] * 1e3:.1f} ms"
                                                          for r in records[-3:]), flush=True)
    targets, reported = figures(records, sizes)
    payload = {"benchmark": NAME, "machine": machine(device), "peers": {p: peers.version(p) for p in found},
               "settings": {"quick": args.quick, "repeats": repeats, "warmup": warmup, "seed": SEED,
                            "sizes": asdict(sizes)},
               "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
               "results": records, "targets": targets, "reported": reported}
    return publish(args, NAME, payload, markdown(payload), [t.line() for t in targets] + reported)
