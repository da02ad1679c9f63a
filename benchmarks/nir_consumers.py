"""How many spikes other tools reproduce from spikeacc's NIR graphs, and spikeacc from theirs.

spikeacc -> consumer: an MLP and a conv network with average pooling, exported for snnTorch
(dt = 1e-4, which its importer always uses) and for Norse (dt = 1e-3, passed to
``from_nir``), read by their own importers and run one unbatched sample at a time (both
apply NIR's per-sample Flatten dims to whatever they are given), against spikeacc's own
network. consumer -> spikeacc: snnTorch's own exporter on Leaky networks of each
reset_mechanism, read by ``spikeacc.interop.nir.load``, against snnTorch running them.

spikeacc's default LIF subtracts V_th where NIR resets to v_reset, so the spikes agree
exactly on every sample in which no neuron fires twice, in either run: a second spike is
the only way a reset shows. Reported per case: the samples checked that way, and the
share of all spike entries (steps x neurons x samples) that agree, on "single" networks
whose charges stay below 2 V_th (no neuron fires twice) and on "active" ones.
tests/test_nir_consumers.py runs the same cases with their bounds.
"""
from __future__ import annotations

import importlib
import logging

import torch
from torch import nn

from spikeacc import LIF, graph
from spikeacc.graph import CallContext
from spikeacc.interop import nir as snir
from spikeacc.methods.base import Inputs, lif_forward
from spikeacc.models import MLP, ConvNet

from .common import Target, base_parser, machine, markdown_table, output_dir, report, setup

T = 12
CONSUMERS = ("snntorch", "norse")
RESETS = ("subtract", "zero", "none")


def limit_charge(net: nn.Module, charge_in: dict[str, float]) -> nn.Module:
    """Make the weights of the named modules (those before a neuron, all bias-free)
    non-negative, each output unit's weights summing to ``charge_in[name]``, chosen so that
    this sum times the most charge one input element brings over the window is < 2 V_th.
    Then every current is >= 0 and every neuron receives a charge Q < 2 V_th in all: it
    fires at most once under either reset (after a spike, spikeacc's membrane stays below
    Q - V_th < V_th, NIR's below the same), and until its spike both membranes are equal."""
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name, total in charge_in.items():
            weight = modules[name].weight
            weight.abs_()
            weight *= total / weight.flatten(1).sum(1).view(-1, *[1] * (weight.dim() - 1))
    return net


def networks(single: bool) -> dict[str, nn.Module]:
    """An MLP and a conv network with average pooling: ``single``, bias-free first layers
    whose charges stay below 2 V_th over a 2-step pulse (``limit_charge``); else weights
    doubled, active networks where neurons fire again."""
    torch.manual_seed(0)
    mlp = MLP(64, [32, 16], 5, neuron=LIF(tau=4.0, v_th=0.8), sample_shape=(1, 8, 8))
    conv = ConvNet((1, 8, 8), (4, 6), 5, neuron=LIF(tau=3.0))
    with torch.no_grad():
        if single:
            for layer in (mlp[1], mlp[3], conv[0], conv[3]):
                layer.bias.zero_()
            limit_charge(mlp, {"1": 1.5 / 2, "3": 1.5})
            limit_charge(conv, {"0": 1.9 / 2, "3": 1.45})
        else:
            for p in [*mlp.parameters(), *conv.parameters()]:
                p.mul_(2.0)
    return {"mlp": mlp, "conv": conv}


def pulse(shape: tuple[int, ...], steps: int, density: float, seed: int = 1) -> torch.Tensor:
    """x [T, *shape]: binary frames for the first ``steps`` steps, then nothing."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(T, *shape)
    x[:steps] = (torch.rand(steps, *shape, generator=generator) < density).float()
    return x


def spikeacc_spikes(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each neuron layer's spikes per step, [T, B, ...]."""
    program = graph.of(net)
    with torch.no_grad():
        spikes, _ = lif_forward(program, Inputs(x, x.shape[0], net, program), CallContext(x.shape[1]))
    return spikes


def snntorch_spikes(exported, x: torch.Tensor) -> list[torch.Tensor]:
    """The graph read by snnTorch's importer, each Leaky's spikes per step [T, B, ...]."""
    snn, utils = importlib.import_module("snntorch"), importlib.import_module("snntorch.utils")
    module = importlib.import_module("snntorch.import_nir").import_from_nir(exported)
    recorded: dict[str, list[torch.Tensor]] = {}
    leaky = [(name, m) for name, m in module.named_modules() if isinstance(m, snn.Leaky)]
    for name, m in leaky:
        m.register_forward_hook(lambda m, args, out, name=name: recorded.setdefault(name, []).append(out))
    per_sample = []
    for b in range(x.shape[1]):  # one unbatched sample at a time (the Flatten dims)
        utils.reset(module)
        recorded.clear()
        with torch.no_grad():
            for t in range(x.shape[0]):
                module(x[t, b])
        per_sample.append([torch.stack(recorded[name]) for name, _ in leaky])
    return [torch.stack(layer, 1) for layer in zip(*per_sample)]


def norse_spikes(exported, x: torch.Tensor, dt: float) -> list[torch.Tensor]:
    """The graph read by Norse's ``from_nir``, each LIF node's spikes per step [T, B, ...]."""
    logging.getLogger().setLevel(logging.ERROR)  # Norse logs a warning for every node's r
    module = importlib.import_module("norse.torch").from_nir(exported, dt=dt)
    lif_names = [name for name, node in exported.nodes.items() if type(node).__name__ == "LIF"]
    per_sample = []
    for b in range(x.shape[1]):
        state, steps = None, []
        with torch.no_grad():
            for t in range(x.shape[0]):
                _, state = module(x[t, b], state)
                steps.append([state.cache[name].clone() for name in lif_names])
        per_sample.append([torch.stack(layer) for layer in zip(*steps)])
    return [torch.stack(layer, 1) for layer in zip(*per_sample)]


def consumer_spikes(net: nn.Module, target: str, x: torch.Tensor) -> list[torch.Tensor]:
    """The network exported for ``target``, imported and run by the consumer's own code."""
    exported = snir.export(net, target=target, allow_lossy=True)
    dt = snir.CONSUMERS[target][0]
    return snntorch_spikes(exported, x) if target == "snntorch" else norse_spikes(exported, x, dt)


def agreement(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> dict:
    """How two runs' spikes (per layer [T, B, ...]) agree: "checked", the samples in which no
    neuron fires twice in either run; "exact", whether every spike of those agrees; "share",
    the share of all spike entries that agree."""
    if [s.shape for s in ours] != [s.shape for s in theirs]:
        raise ValueError(f"spike shapes differ: {[tuple(s.shape) for s in ours]} vs {[tuple(s.shape) for s in theirs]}")
    twice = torch.zeros(ours[0].shape[1], dtype=torch.bool)
    for spikes in (*ours, *theirs):
        twice |= spikes.sum(0).flatten(1).amax(1) > 1
    theirs = [b.to(a.dtype) for a, b in zip(ours, theirs)]
    exact = all(torch.equal(a[:, ~twice], b[:, ~twice]) for a, b in zip(ours, theirs))
    equal = sum(int((a == b).sum()) for a, b in zip(ours, theirs))
    return {"checked": int((~twice).sum()), "samples": len(twice), "exact": exact,
            "share": equal / sum(a.numel() for a in ours)}


def snntorch_network(reset_mechanism: str, single: bool) -> nn.Sequential:
    """Linear -> Leaky -> Linear -> Leaky(output), per-neuron beta and threshold tensors (what
    snnTorch's exporter needs to pass NIR's type check); ``single`` as ``networks``."""
    snn = importlib.import_module("snntorch")

    def leaky(n: int, **extra) -> nn.Module:
        return snn.Leaky(beta=torch.full((n,), 0.8), threshold=torch.full((n,), 0.9), init_hidden=True,
                         reset_mechanism=reset_mechanism, **extra)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), leaky(16), nn.Linear(16, 4), leaky(4, output=True))
    with torch.no_grad():
        if single:
            net[0].bias.zero_()
            net[2].bias.zero_()
            limit_charge(net, {"0": 0.85, "2": 1.7})  # charges below 2 V_th = 1.8 over a 2-step pulse
        else:
            for p in net.parameters():
                p.mul_(2.0)
    return net


def snntorch_round_trip(reset_mechanism: str, single: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(spikeacc's spikes, snnTorch's) for a snnTorch network written by snnTorch's exporter
    and read by spikeacc, both layers, [T, B, ...]."""
    exporter, utils = importlib.import_module("snntorch.export_nir"), importlib.import_module("snntorch.utils")
    net = snntorch_network(reset_mechanism, single)
    x = pulse((32, 10), steps=2, density=0.9, seed=2)
    hidden: list[torch.Tensor] = []
    net[1].register_forward_hook(lambda m, args, out: hidden.append(out))
    utils.reset(net)
    with torch.no_grad():
        outputs = [net(x_t)[0] for x_t in x]
    theirs = [torch.stack(hidden), torch.stack(outputs)]  # before the exporter runs the network too
    loaded = snir.load(exporter.export_to_nir(net, x[0, :1], ignore_dims=[0]), dt=1e-4)
    return spikeacc_spikes(loaded, x), theirs


def measure() -> list[dict]:
    rows = []
    for kind, single in (("single", True), ("active", False)):
        x = pulse((24, 1, 8, 8), steps=2 if single else 3, density=0.9 if single else 0.5)
        for name, net in networks(single).items():
            ours = spikeacc_spikes(net, x)
            for target in CONSUMERS:
                rows.append({"direction": f"spikeacc -> {target}", "network": f"{name} ({kind})",
                             **agreement(ours, consumer_spikes(net, target, x))})
    for reset in RESETS:
        for kind, single in (("single", True), ("active", False)):
            rows.append({"direction": "snntorch -> spikeacc", "network": f"Leaky {reset} ({kind})",
                         **agreement(*snntorch_round_trip(reset, single))})
    return rows


def build_parser():
    return base_parser("nir_consumers", __doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = setup(args)
    missing = [name for name in ("snntorch", "norse") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"[nir_consumers] skip: {', '.join(missing)} not installed; pip install --no-deps -r tests/peers.txt")
        return 0
    rows = measure()
    table = markdown_table(["direction", "network", "samples without a second spike", "their spikes all equal",
                            "spike entries that agree"],
                           [(r["direction"], r["network"], f"{r['checked']} of {r['samples']}",
                             "yes" if r["exact"] else "NO", f"{100 * r['share']:.1f}%") for r in rows])
    how = ("Spikes per step and neuron, T = 12, binary input pulses. In a sample where no neuron fires twice "
           "in either run every spike must agree; the last column counts all samples.")
    targets = [Target("every spike equal where no neuron fires twice", "all cases",
                      sum(r["exact"] for r in rows), all(r["exact"] for r in rows))]
    payload = {"machine": machine(device), "results": rows, "targets": targets}
    return report(args, "nir_consumers", payload, "NIR graphs read by other tools", how, table)
