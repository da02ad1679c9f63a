"""spikeacc against SpikingJelly 2.0 and snnTorch 1.0: the same network, weights, batch and loss.

For each comparison, in one process (2 threads unless --threads): the peer's twin of
spikeacc's network gets spikeacc's weights; on one random Fashion-MNIST-shaped batch the
loss and every parameter gradient must agree first (relative error <= 1e-9, checked on
float64 copies so that no float32 rounding of a long sum hides or fakes a difference),
then one float32 optimisation step (zero_grad, loss and gradient, Adam) of every library is timed
round-robin (median of the repeats) and its peak memory measured with
``spikeacc.profiling.peak_memory``. A peer that disagrees is reported and not timed; a
peer that is not installed is skipped with one line and the rest still runs
(``pip install --no-deps spikingjelly snntorch loguru`` installs them and keeps torch).

Comparisons: BPTT against SpikingJelly's multi-step network (MLP T = 4, 8; ConvNet T = 4)
and snnTorch's loop over T (MLP T = 4, 8; peak memory at T = 32); OTTT-A against
SpikingJelly's OTTT (MLP, T = 6); SAF-F against one step of the same-size ANN (T = 4, 8);
peak memory of the online methods at T = 4 and 32.

    python -m benchmarks peers [--quick] [--threads N] [--repeats N] [--out DIR | --update-results]
"""
from __future__ import annotations

import copy
import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from functools import partial
from types import SimpleNamespace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

import spikeacc
from spikeacc import LIF, methods
from spikeacc.methods.base import per_step_ce
from spikeacc.models import MLP, ConvNet
from spikeacc.neurons import accumulation_weight
from spikeacc.profiling import peak_memory

from .common import (Target, base_parser, machine, machine_line, markdown_table, median, publish, setup,
                     time_round_robin)
from .saf_family import IMAGE, LEARNING_RATE, N_CLASSES, SEED, random_batch

NAME = "peers"
TOLERANCE = 1e-9  # relative, on the float64 copies
# snnTorch's surrogates make float32 spikes (``(input_ > 0).float()``), so its gradient passes
# through float32 on the float64 copy too: float32's tolerance for it.
TOLERANCES = {"snntorch": 1e-6}
CHECK_DTYPE = torch.float64
THREADS = 2
MB = 2 ** 20
Gradients = tuple[torch.Tensor, list[torch.Tensor]]  # loss and every parameter's gradient, in order
Build = Callable[[], nn.Sequential]
Batch = tuple[torch.Tensor, torch.Tensor]  # images [B, 1, 28, 28], labels [B]

NOTES = [
    "Loss everywhere: L = (1/T) sum_t CE(o[t], y), o[t] the readout of step t (snnTorch's tutorials "
    "sum over t; here it is divided by T).",
    "SpikingJelly BPTT: `LIFNode(tau, decay_input=False, v_reset=None, surrogate Sigmoid(alpha))` and "
    "`layer.*` in multi-step mode, fed x expanded to [T, B, ...] as its conv_fashion_mnist example "
    "does, `reset_net` after every batch.",
    "snnTorch BPTT: `Leaky(beta=1 - 1/tau, reset_mechanism='subtract', reset_delay=False, "
    "spike_grad=sigmoid(slope=alpha))` between `nn.Linear`s, the loop over T of its tutorials (the "
    "first Linear applied to the input every step). Its default `reset_delay=True` does not leak the "
    "reset (u[t] = beta u[t-1] + I[t] - V_th s[t-1], spikeacc: beta (u[t-1] - V_th s[t-1]) + I[t]): a "
    "different neuron. With `reset_delay=False` it equals spikeacc's LIF except after a membrane above "
    "2 V_th: the membrane left after the reset is still above V_th, and snnTorch subtracts V_th once "
    "more before the next firing decision (adding it back if no spike follows), so that spike is "
    "decided, and its surrogate taken, at u[t] - V_th; the gradient check shows whether this changed "
    "anything on the batch.",
    "SpikingJelly OTTT: `OTTTLIFNode` in an `OTTTSequential`, one forward and one backward of "
    "CE(o[t], y)/T per step, `reset_net` after the T steps. Its gradient is delta[t] a_hat[t]^T with "
    "a_hat the trace of the layer's input, as spikeacc's, but (a) a plain tensor input has no trace "
    "(the first layer's weight gets delta[t] x^T where spikeacc uses the input trace c[t] x, "
    "c[t] = sum_{k<t} lam^k) and (b) a hidden layer's bias gets delta[t] where spikeacc, treating it as "
    "a constant input, uses c[t] delta[t]. The compared (and target) SpikingJelly run is fed "
    "[x, c[t] x] (a spike tensor and its trace, its own interface), so its first-layer weight "
    "gradient is spikeacc's and it computes the same products; the check weights its per-step "
    "hidden-bias gradients by c[t]. The run fed plain x, as SpikingJelly's `OTTTSpikingVGG` takes its "
    "images ('plain input'), computes one product fewer per step in the first layer; it is timed for "
    "information and checked with its first-layer weight gradients weighted by c[t] too.",
    "ANN: Linear-ReLU-Linear of the same sizes with the same weights on the same batch, CE loss; a "
    "different network, so it is timed without a gradient check.",
]


@dataclass(frozen=True)
class Sizes:
    hidden: int  # MLP 784-hidden-10
    channels: tuple[int, int]  # ConvNet
    mlp_batch: int
    conv_batch: int


FULL = Sizes(800, (16, 32), 128, 32)
QUICK = Sizes(16, (2, 4), 5, 3)


# --- the peers --------------------------------------------------------------------------------

def import_spikingjelly() -> SimpleNamespace:
    base = "spikingjelly.activation_based"
    return SimpleNamespace(**{name: importlib.import_module(f"{base}.{name}")
                              for name in ("neuron", "layer", "functional", "surrogate")})


def import_snntorch() -> SimpleNamespace:
    return SimpleNamespace(Leaky=importlib.import_module("snntorch").Leaky,
                           surrogate=importlib.import_module("snntorch.surrogate"))


PEERS = {"spikingjelly": import_spikingjelly, "snntorch": import_snntorch}
INSTALL = {"spikingjelly": "spikingjelly loguru", "snntorch": "snntorch"}  # SpikingJelly 2.0 imports loguru


def import_peers() -> tuple[dict[str, SimpleNamespace], dict[str, str]]:
    """The installed peers, and for each missing one why it cannot be imported."""
    found, missing = {}, {}
    for library, load in PEERS.items():
        try:
            found[library] = load()
        except ImportError as error:
            missing[library] = str(error)
    return found, missing


def version(library: str) -> str:
    own = {"torch": torch.__version__, "spikeacc": spikeacc.__version__}
    if library in own:
        return own[library]
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# --- who runs a step --------------------------------------------------------------------------

@dataclass(eq=False)
class Contender:
    """One library's training step on its own copy of the weights. ``loss_and_grad`` adds to
    every ``.grad`` and returns the loss; ``gradients`` gives (loss, gradients) from zero in
    spikeacc's convention (what the check compares)."""

    library: str
    method: str
    net: nn.Module
    loss_and_grad: Callable[[], torch.Tensor]
    gradients: Callable[[], Gradients] | None = None
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=LEARNING_RATE)
        if self.gradients is None:
            self.gradients = partial(fresh_gradients, self.net, self.loss_and_grad)

    @property
    def label(self) -> str:
        return f"{self.library} {self.method}"

    def step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_and_grad()
        self.optimizer.step()


def fresh_gradients(net: nn.Module, loss_and_grad: Callable[[], torch.Tensor]) -> Gradients:
    net.zero_grad(set_to_none=True)
    loss = loss_and_grad().detach()
    grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    return loss, grads


def spikeacc_method(name: str, net: nn.Module, T: int, x: torch.Tensor, y: torch.Tensor) -> Contender:
    method = methods.get(name, T)
    return Contender("spikeacc", name, net, lambda: method.loss_and_grad(net, x, y)[0])


def neuron_of(net: nn.Sequential) -> LIF:
    """The network's LIF settings (one setting for all of them, the sigmoid surrogate)."""
    lifs = [m for m in net if isinstance(m, LIF)]
    settings = {tuple(sorted(m.settings().items())) for m in lifs}
    if len(settings) != 1 or lifs[0].surrogate != "sigmoid" or lifs[0].detach_reset:
        raise ValueError("peers: the twins assume one LIF setting with the sigmoid surrogate, reset not detached")
    return lifs[0]


def spikingjelly_twin(sj: SimpleNamespace, net: nn.Sequential, online: bool) -> nn.Sequential:
    """SpikingJelly's network with the same layers and weights: multi-step LIFNodes, or
    OTTTLIFNodes in an OTTTSequential (single-step) with ``online``."""
    neuron_of(net)  # the settings the twins can copy
    node = sj.neuron.OTTTLIFNode if online else sj.neuron.LIFNode
    twins: dict[type, Callable[[nn.Module], nn.Module]] = {
        LIF: lambda m: node(tau=m.tau, decay_input=False, v_threshold=m.v_th, v_reset=None,
                            surrogate_function=sj.surrogate.Sigmoid(alpha=m.alpha)),
        nn.Linear: lambda m: sj.layer.Linear(m.in_features, m.out_features, bias=m.bias is not None),
        nn.Conv2d: lambda m: sj.layer.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                                             m.padding, bias=m.bias is not None),
        nn.AvgPool2d: lambda m: sj.layer.AvgPool2d(m.kernel_size, m.stride),
        nn.Flatten: lambda m: sj.layer.Flatten(m.start_dim, m.end_dim),
    }
    layers = [twins[type(m)](m) for m in net]
    weight = next(net.parameters())
    twin = (sj.layer.OTTTSequential if online else nn.Sequential)(*layers).to(weight.device, weight.dtype)
    twin.load_state_dict(net.state_dict())
    if not online:
        sj.functional.set_step_mode(twin, "m")
    return twin


def spikingjelly_bptt(sj: SimpleNamespace, net: nn.Sequential, T: int, x: torch.Tensor,
                      y: torch.Tensor) -> Contender:
    twin = spikingjelly_twin(sj, net, online=False)

    def loss_and_grad() -> torch.Tensor:
        loss = per_step_ce(twin(x.unsqueeze(0).expand(T, *x.shape)), y)
        loss.backward()
        sj.functional.reset_net(twin)
        return loss

    return Contender("spikingjelly", "bptt", twin, loss_and_grad)


def spikingjelly_ottt_steps(sj: SimpleNamespace, twin: nn.Module, T: int, lam: float, x: torch.Tensor,
                            y: torch.Tensor, input_trace: bool) -> Iterator[torch.Tensor]:
    """SpikingJelly's OTTT: each step runs the network once on the input (``[x, c[t] x]``, a
    spike tensor and its trace, with ``input_trace``) and backpropagates CE(o[t], y) / T at
    once; yields each step's loss after its backward."""
    for t in range(T):
        step_input = [x, x * accumulation_weight(lam, t + 1)] if input_trace else x
        loss = F.cross_entropy(twin(step_input), y) / T
        loss.backward()
        yield loss.detach()
    sj.functional.reset_net(twin)


def per_step_weighted(twin: nn.Module, steps: Iterator[torch.Tensor],
                      weights: dict[str, list[float]]) -> Gradients:
    """Gradients from zero summed over the steps, parameter ``name``'s step t gradient
    multiplied by ``weights[name][t]`` (1 for the others)."""
    twin.zero_grad(set_to_none=True)
    totals = {name: torch.zeros_like(p) for name, p in twin.named_parameters()}
    losses = []
    for t, step_loss in enumerate(steps):
        for name, p in twin.named_parameters():
            totals[name] += (weights[name][t] if name in weights else 1.0) * p.grad
        twin.zero_grad(set_to_none=True)
        losses.append(step_loss)
    return torch.stack(losses).sum(), list(totals.values())


def c_weighted_names(net: nn.Sequential, input_trace: bool) -> list[str]:
    """The parameters whose OTTT gradient spikeacc scales by c[t] where SpikingJelly does not:
    the biases of layers feeding a neuron, and without ``input_trace`` the input layer's weight."""
    feeding = [i for i in range(len(net) - 1) if isinstance(net[i + 1], LIF)]
    names = [f"{i}.bias" for i in feeding if net[i].bias is not None]
    first = next(i for i, m in enumerate(net) if isinstance(m, (nn.Linear, nn.Conv2d)))
    return names if input_trace else [f"{first}.weight", *names]


def spikingjelly_ottt(sj: SimpleNamespace, net: nn.Sequential, T: int, x: torch.Tensor, y: torch.Tensor,
                      input_trace: bool) -> Contender:
    twin = spikingjelly_twin(sj, net, online=True)
    lam = neuron_of(net).lam
    steps = partial(spikingjelly_ottt_steps, sj, twin, T, lam, x, y, input_trace)
    c = [accumulation_weight(lam, t + 1) for t in range(T)]
    weights = {name: c for name in c_weighted_names(net, input_trace)}
    return Contender("spikingjelly", "ottt" if input_trace else "ottt (plain input)", twin,
                     lambda: sum(steps()), lambda: per_step_weighted(twin, steps(), weights))


class SnnTorchMLP(nn.Module):
    """Linear -> snnTorch Leaky -> Linear, looped over T as snnTorch's tutorials do."""

    def __init__(self, snn: SimpleNamespace, net: nn.Sequential) -> None:
        super().__init__()
        lif = neuron_of(net)
        if len(net) != 4:
            raise ValueError("peers: the snnTorch twin is the one-hidden-layer MLP")
        self.fc1, self.fc2 = copy.deepcopy(net[1]), copy.deepcopy(net[3])
        self.lif1 = snn.Leaky(beta=lif.lam, threshold=lif.v_th, spike_grad=snn.surrogate.sigmoid(slope=lif.alpha),
                              reset_mechanism="subtract", reset_delay=False)

    def forward(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """Readout of every step, [T, B, K]."""
        mem = self.lif1.init_leaky()
        flat, outputs = x.flatten(1), []
        for _ in range(T):
            spike, mem = self.lif1(self.fc1(flat), mem)
            # snnTorch's surrogates return float32 spikes; a no-op except on the float64 check copy
            outputs.append(self.fc2(spike.to(flat.dtype)))
        return torch.stack(outputs)


def snntorch_bptt(snn: SimpleNamespace, net: nn.Sequential, T: int, x: torch.Tensor, y: torch.Tensor) -> Contender:
    twin = SnnTorchMLP(snn, net)

    def loss_and_grad() -> torch.Tensor:
        loss = per_step_ce(twin(x, T), y)
        loss.backward()
        return loss

    return Contender("snntorch", "bptt", twin, loss_and_grad)


def same_size_ann(net: nn.Sequential, x: torch.Tensor, y: torch.Tensor) -> Contender:
    """Flatten -> Linear -> ReLU -> Linear with the MLP's weights, CE loss."""
    ann = nn.Sequential(*(nn.ReLU() if isinstance(m, LIF) else copy.deepcopy(m) for m in net))

    def loss_and_grad() -> torch.Tensor:
        loss = F.cross_entropy(ann(x), y)
        loss.backward()
        return loss

    return Contender("torch", "ann", ann, loss_and_grad)


# --- checking and measuring -------------------------------------------------------------------

def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """max |value - reference| / max |reference| (the difference itself where the reference is 0)."""
    scale = reference.abs().max().item()
    difference = (value - reference).abs().max().item()
    return difference / scale if scale > 0 else difference


def agreement(reference: Contender, peer: Contender) -> dict:
    """Loss and every gradient of ``peer`` against ``reference`` on the initial weights."""
    ref_loss, ref_grads = reference.gradients()
    loss, grads = peer.gradients()
    names = [name for name, _ in reference.net.named_parameters()]
    if [g.shape for g in grads] != [g.shape for g in ref_grads]:
        raise ValueError(f"peers: {peer.label} has other parameters than {reference.label}")
    errors = {name: relative_error(g, r) for name, g, r in zip(names, grads, ref_grads)}
    loss_error = relative_error(loss, ref_loss)
    worst = max(errors.values())
    tolerance = TOLERANCES.get(peer.library, TOLERANCE)
    return {"loss": loss.item(), "reference_loss": ref_loss.item(), "loss_rel_err": loss_error,
            "grad_rel_err": errors, "max_grad_rel_err": worst, "tolerance": tolerance,
            "agrees": loss_error <= tolerance and worst <= tolerance}


@dataclass
class Group:
    """Contenders on one model and T; the first is spikeacc's, the reference of the checks.
    ``timed``: step times too (else peak memory only)."""

    comparison: str
    model: str
    T: int
    batch: int
    contenders: list[Contender]
    timed: bool = True


def measure(group: Group, device: torch.device, repeats: int, warmup: int,
            check: Group | None = None) -> list[dict]:
    """Check every peer of ``check`` (the same group on float64 copies; ``group`` itself when
    None) against its reference, then time and measure the ones of ``group`` that agree."""
    check = check or group
    reference, checks, kept = check.contenders[0], {}, []
    for checked, contender in zip(check.contenders, group.contenders, strict=True):
        if contender.library in PEERS:
            checks[contender.label] = agreement(reference, checked)
            print(f"[{NAME}] check {contender.label} vs {reference.label}, {group.model} T={group.T}: "
                  f"{verdict(checks[contender.label])}", flush=True)
            if not checks[contender.label]["agrees"]:
                continue
        kept.append(contender)
    seconds = time_round_robin({c.label: c.step for c in kept}, repeats, warmup, device) if group.timed else {}
    records = []
    for contender in group.contenders:
        record = {"comparison": group.comparison, "model": group.model, "T": group.T, "batch": group.batch,
                  "library": contender.library, "version": version(contender.library),
                  "method": contender.method, "check": checks.get(contender.label)}
        if contender in kept:
            record["peak_step_bytes"] = peak_memory(contender.step, device)
            record["peak_grad_bytes"] = peak_memory(contender.loss_and_grad, device,
                                                    partial(contender.net.zero_grad, set_to_none=True))
            if group.timed:
                record |= {"step_seconds": seconds[contender.label],
                           "step_median_s": median(seconds[contender.label]),
                           "step_min_s": min(seconds[contender.label])}
        records.append(record)
    return records


def measure_groups(groups: list[Callable[[], Group]], checks: list[Callable[[], Group]], device: torch.device,
                   repeats: int, warmup: int) -> list[dict]:
    """``measure`` each group, built when it is measured, against its float64 twin of
    ``checks``; one summary line per group."""
    records = []
    for build_group, build_check in zip(groups, checks, strict=True):
        group = build_group()
        records += measure(group, device, repeats, warmup, check=build_check())
        print(summary(group, records[-len(group.contenders):]), flush=True)
    return records


def verdict(check: dict) -> str:
    result = "agree" if check["agrees"] else "DISAGREE: not timed"
    return (f"loss rel. error {check['loss_rel_err']:.1e}, worst gradient rel. error "
            f"{check['max_grad_rel_err']:.1e} (tolerance {check['tolerance']:g}): {result}")


# --- the comparisons --------------------------------------------------------------------------

def built(build: Build, device: torch.device, dtype: torch.dtype) -> nn.Sequential:
    torch.manual_seed(SEED)
    return build().to(device, dtype)


def batch_of(batch: Batch, dtype: torch.dtype) -> Batch:
    images, labels = batch
    return images.to(dtype), labels


def bptt_group(comparison: str, model: str, build: Build, T: int, batch: Batch,
               peers: dict[str, SimpleNamespace], timed: bool = True) -> Group:
    """spikeacc's BPTT, SpikingJelly's and (MLP) snnTorch's."""
    net, (x, y) = build(), batch
    contenders = [spikeacc_method("bptt", copy.deepcopy(net), T, x, y)]
    if "spikingjelly" in peers:
        contenders.append(spikingjelly_bptt(peers["spikingjelly"], net, T, x, y))
    if "snntorch" in peers and model == "mlp":
        contenders.append(snntorch_bptt(peers["snntorch"], net, T, x, y))
    return Group(comparison, model, T, len(x), contenders, timed)


def ottt_group(build: Build, T: int, batch: Batch, peers: dict[str, SimpleNamespace]) -> Group:
    net, (x, y) = build(), batch
    contenders = [spikeacc_method("ottt-a", copy.deepcopy(net), T, x, y)]
    if "spikingjelly" in peers:
        contenders += [spikingjelly_ottt(peers["spikingjelly"], net, T, x, y, input_trace=True),
                       spikingjelly_ottt(peers["spikingjelly"], net, T, x, y, input_trace=False)]
    return Group("ottt", "mlp", T, len(x), contenders)


def ann_group(build: Build, T: int, batch: Batch, model: str = "mlp") -> Group:
    net, (x, y) = build(), batch
    return Group("saf-f vs ann", model, T, len(x),
                 [spikeacc_method("saf-f", copy.deepcopy(net), T, x, y), same_size_ann(net, x, y)])


def online_memory_group(build: Build, T: int, batch: Batch) -> Group:
    net, (x, y) = build(), batch
    return Group("online memory", "mlp", T, len(x),
                 [spikeacc_method(name, copy.deepcopy(net), T, x, y) for name in ONLINE], timed=False)


ONLINE = ("saf-e", "saf-f", "ottt-a")


def plan(sizes: Sizes, peers: dict[str, SimpleNamespace], device: torch.device,
         dtype: torch.dtype) -> list[Callable[[], Group]]:
    """Every group at ``dtype``, built when it is measured."""
    mlp = partial(built, partial(MLP, 784, [sizes.hidden], N_CLASSES, sample_shape=IMAGE), device, dtype)
    conv = partial(built, partial(ConvNet, IMAGE, sizes.channels, N_CLASSES), device, dtype)
    mlp_batch = batch_of(random_batch(sizes.mlp_batch, IMAGE, device), dtype)
    conv_batch = batch_of(random_batch(sizes.conv_batch, IMAGE, device), dtype)
    return [
        *(partial(bptt_group, "bptt", "mlp", mlp, T, mlp_batch, peers) for T in (4, 8)),
        partial(bptt_group, "bptt", "conv", conv, 4, conv_batch, peers),
        partial(bptt_group, "bptt memory", "mlp", mlp, 32, mlp_batch, peers, timed=False),
        partial(ottt_group, mlp, 6, mlp_batch, peers),
        *(partial(ann_group, mlp, T, mlp_batch) for T in (4, 8)),
        *(partial(online_memory_group, mlp, T, mlp_batch) for T in (4, 32)),
    ]


# --- targets and report -----------------------------------------------------------------------

Key = tuple[str, str, int, str, str]  # comparison, model, T, library, method


@dataclass(frozen=True)
class Ratio:
    """A figure of the issue: record[numerator][key] / record[denominator][key] <= limit
    (None: reported without a target)."""

    name: str
    numerator: Key
    denominator: Key
    key: str
    limit: float | None = None


RATIOS = [
    Ratio("BPTT step, MLP T=4, spikeacc / SpikingJelly", ("bptt", "mlp", 4, "spikeacc", "bptt"),
          ("bptt", "mlp", 4, "spikingjelly", "bptt"), "step_median_s", 0.6),
    Ratio("BPTT step, MLP T=8, spikeacc / SpikingJelly", ("bptt", "mlp", 8, "spikeacc", "bptt"),
          ("bptt", "mlp", 8, "spikingjelly", "bptt"), "step_median_s", 0.6),
    Ratio("BPTT step, ConvNet T=4, spikeacc / SpikingJelly", ("bptt", "conv", 4, "spikeacc", "bptt"),
          ("bptt", "conv", 4, "spikingjelly", "bptt"), "step_median_s", 0.8),
    Ratio("OTTT step, MLP T=6, spikeacc OTTT-A / SpikingJelly OTTT", ("ottt", "mlp", 6, "spikeacc", "ottt-a"),
          ("ottt", "mlp", 6, "spikingjelly", "ottt"), "step_median_s", 0.7),
    Ratio("SAF-F step T=8 / one step of the same-size ANN, MLP", ("saf-f vs ann", "mlp", 8, "spikeacc", "saf-f"),
          ("saf-f vs ann", "mlp", 8, "torch", "ann"), "step_median_s", 1.5),
    Ratio("BPTT peak memory of loss and gradient, MLP T=32, spikeacc / snnTorch",
          ("bptt memory", "mlp", 32, "spikeacc", "bptt"), ("bptt memory", "mlp", 32, "snntorch", "bptt"),
          "peak_grad_bytes", 1.0),
    *(Ratio(f"{name} peak memory of loss and gradient, MLP, T=32 / T=4", ("online memory", "mlp", 32, "spikeacc", name),
            ("online memory", "mlp", 4, "spikeacc", name), "peak_grad_bytes", 1.1) for name in ONLINE),
]


def key_of(record: dict) -> Key:
    return record["comparison"], record["model"], record["T"], record["library"], record["method"]


def targets(records: list[dict]) -> tuple[list[Target], list[str]]:
    """The issue's figures that were measured, and a line for each one that was not."""
    index = {key_of(r): r for r in records}
    found, unmeasured = [], []
    for ratio in RATIOS:
        pair = [index.get(ratio.numerator, {}).get(ratio.key), index.get(ratio.denominator, {}).get(ratio.key)]
        if None in pair:
            unmeasured.append(f"{ratio.name}: not measured ({unmeasured_reason(index, ratio)})")
            continue
        if pair[1] == 0:  # the profiler missed the frees of blocks it saw no allocation of
            unmeasured.append(f"{ratio.name}: not measured (the denominator measured 0 bytes)")
            continue
        value = pair[0] / pair[1]
        found.append(Target(ratio.name, f"<= {ratio.limit:g}", value, value <= ratio.limit))
    return found, unmeasured


def unmeasured_reason(index: dict[Key, dict], ratio: Ratio) -> str:
    """A figure is missing because its peer is not installed or disagreed (and was not timed)."""
    key = next(k for k in (ratio.numerator, ratio.denominator) if ratio.key not in index.get(k, {}))
    return f"{key[3]} not installed" if key not in index else f"{key[3]} {key[4]} disagrees with spikeacc"


def markdown(payload: dict) -> str:
    records = payload["results"]
    lines = [*header(payload), "## Targets", ""]
    lines += [f"- {t.line()}" for t in payload["targets"]] + [f"- {line}" for line in payload["unmeasured"]]
    lines += ["", "## Step time and peak memory", "", markdown_table(
        ["comparison", "model", "T", "batch", "library", "method", "step median (ms)", "min (ms)", "first row ÷ this",
         "peak step (MiB)", "peak loss and gradient (MiB)"],
        [row(r, records) for r in records])]
    checked = [r for r in records if r["check"]]
    lines += ["", "## Gradient checks", "", markdown_table(
        ["comparison", "model", "T", "peer", "loss rel. error", "worst gradient rel. error", "result"],
        [[r["comparison"], r["model"], r["T"], f"{r['library']} {r['method']}", f"{r['check']['loss_rel_err']:.1e}",
          f"{r['check']['max_grad_rel_err']:.1e}", "agree" if r["check"]["agrees"] else "DISAGREE (not timed)"]
         for r in checked]) if checked else "No peer installed: nothing to check."]
    lines += ["", "## Conventions", ""] + [f"- {note}" for note in NOTES]
    return "\n".join(lines)


def header(payload: dict) -> list[str]:
    """Title, machine and load, peers, and how everything was measured."""
    settings, load = payload["settings"], payload["load_average_1min"]
    peers = ", ".join(f"{name} {v}" for name, v in payload["peers"].items()) or "none installed"
    return [f"# Benchmark: spikeacc against SpikingJelly and snnTorch "
            f"({'quick smoke run' if settings['quick'] else 'full run'})", "",
            f"Machine: {machine_line(payload['machine'])}; load average (1 min) {load['start']:.1f} at the "
            f"start, {load['end']:.1f} at the end.", "",
            f"Peers: {peers}." + "".join(f" Skipped {name}: {why}." for name, why in payload["missing"].items()), "",
            f"One step: zero_grad, loss and gradient, Adam (lr {LEARNING_RATE}) on one random batch of "
            f"1x28x28 images in [0, 1] (seed {SEED}); {settings['warmup']} warm-up steps, then the median "
            f"of {settings['repeats']} steps taken round-robin over the group's libraries. Peak memory: "
            "extra bytes allocated during one step, and during the loss and gradient alone (from "
            "gradients set to None; the memory targets use this one, the optimiser's temporaries "
            "would hide the methods' own), `spikeacc.profiling.peak_memory` (on a CPU the second of two "
            "calls in one profile), for every library. "
            f"MLP 784-{settings['hidden']}-10 (batch {settings['mlp_batch']}), ConvNet {settings['channels']} "
            f"(batch {settings['conv_batch']}). Checks: loss and every gradient on float64 copies of "
            f"the initial weights and batch, max |peer - spikeacc| / max |spikeacc| <= {TOLERANCE:g} per "
            f"tensor ({TOLERANCES['snntorch']:g} for snnTorch, whose spikes are float32 on any copy).", ""]


def row(record: dict, records: list[dict]) -> list:
    """A table row; the ratio is the group's first record's median step time over this one's."""
    first = next(r for r in records if r["comparison"] == record["comparison"] and r["T"] == record["T"]
                 and r["model"] == record["model"])
    step = record.get("step_median_s")
    ratio = f"{first['step_median_s'] / step:.2f}" if step and record is not first else ""
    peaks = [f"{record[key] / MB:.2f}" if key in record else "not run"
             for key in ("peak_step_bytes", "peak_grad_bytes")]
    return [record["comparison"], record["model"], record["T"], record["batch"], record["library"], record["method"],
            f"{step * 1e3:.1f}" if step else "", f"{record['step_min_s'] * 1e3:.1f}" if step else "", ratio, *peaks]


def summary(group: Group, records: list[dict]) -> str:
    """One line per group: step time and peak memory of the loss and gradient per library."""
    parts = [f"{r['library']} {r['method']} " + (f"{r['step_median_s'] * 1e3:.1f} ms, " if "step_median_s" in r else "")
             + (f"{r['peak_grad_bytes'] / MB:.1f} MiB" if "peak_grad_bytes" in r else "not run") for r in records]
    head = f"[{NAME}] {group.comparison} {group.model} T={group.T} (step, loss-and-gradient memory)"
    return f"{head}: " + ", ".join(parts)


def build_parser():
    parser = base_parser(NAME, __doc__.split("\n\n")[0])
    parser.set_defaults(threads=THREADS)
    return parser


def available_peers(prefix: str = NAME) -> tuple[dict[str, SimpleNamespace], dict[str, str]]:
    """``import_peers``, with one line for each peer skipped."""
    found, missing = import_peers()
    for library, why in missing.items():
        print(f"[{prefix}] skip {library}: cannot import it ({why}); pip install --no-deps {INSTALL[library]} "
              "(see the README) to compare against it", flush=True)
    return found, missing


def repeats_and_warmup(args) -> tuple[int, int]:
    """--repeats and --warmup, or 21 and 2 (1 and 0 with --quick)."""
    return args.repeats or (1 if args.quick else 21), args.warmup if args.warmup is not None else (0 if args.quick
                                                                                                  else 2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = setup(args)
    sizes = QUICK if args.quick else FULL
    repeats, warmup = repeats_and_warmup(args)
    load_before = os.getloadavg()
    peers, missing = available_peers()
    records = measure_groups(plan(sizes, peers, device, torch.float32), plan(sizes, peers, device, CHECK_DTYPE),
                             device, repeats, warmup)
    found, unmeasured = targets(records)
    payload = {
        "benchmark": NAME, "machine": machine(device),
        "peers": {library: version(library) for library in peers}, "missing": missing,
        "settings": {"quick": args.quick, "repeats": repeats, "warmup": warmup, "seed": SEED,
                     "optimizer": f"Adam(lr={LEARNING_RATE})", "tolerance": TOLERANCE,
                     "tolerances": TOLERANCES, "check_dtype": str(CHECK_DTYPE), "hidden": sizes.hidden,
                     "channels": list(sizes.channels), "mlp_batch": sizes.mlp_batch, "conv_batch": sizes.conv_batch},
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        "results": records, "targets": found, "unmeasured": unmeasured, "notes": NOTES,
    }
    return publish(args, NAME, payload, markdown(payload), [t.line() for t in found] + unmeasured)
