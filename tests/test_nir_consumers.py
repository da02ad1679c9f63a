"""NIR graphs read by other tools, with those tools' own importers (snnTorch, Norse).

spikeacc -> consumer: an MLP and a conv network with average pooling, exported for each
consumer (``target``: snnTorch steps with dt = 1e-4, Norse with the dt it is given) and
imported by ``snntorch.import_nir.import_from_nir`` / ``norse.torch.from_nir``, spike per
step and per neuron against spikeacc's own network (``lif_forward``). spikeacc's LIF
subtracts V_th where NIR resets to v_reset (the export is ``lossy``), so the two agree
exactly on every sample where no neuron fires twice, in either: a second spike is the only
way a reset can show. The agreement over all samples is measured too. Both importers apply
NIR's per-sample Flatten dims to what they are given, so they run one unbatched sample at a
time.

consumer -> spikeacc: snnTorch's own exporter (``export_to_nir``) on Leaky networks of each
reset_mechanism, read by ``spikeacc.interop.nir.load`` (NIR's rules: hard reset, firing on >)
and run by ``spiking_inference``, against snnTorch running its network.
"""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from spikeacc import LIF, graph
from spikeacc.graph import CallContext
from spikeacc.interop import nir as snir
from spikeacc.methods.base import Inputs, lif_forward
from spikeacc.models import MLP, ConvNet

from tests.peers import require
from tests.test_nir import at_most_one_spike as limit_charge

T = 12


def networks(at_most_one_spike: bool = False) -> dict[str, nn.Module]:
    """An MLP and a conv network with average pooling. ``at_most_one_spike``: bias-free
    first layers with non-negative weights whose sums keep every neuron's charge below
    2 V_th over ``inputs(pulse=2)`` (tests/test_nir.py): no neuron fires twice, so the
    reset rule never shows; else weights doubled: active networks where it does."""
    torch.manual_seed(0)
    mlp = MLP(64, [32, 16], 5, neuron=LIF(tau=4.0, v_th=0.8), sample_shape=(1, 8, 8))
    conv = ConvNet((1, 8, 8), (4, 6), 5, neuron=LIF(tau=3.0))
    with torch.no_grad():
        if at_most_one_spike:
            for layer in (mlp[1], mlp[3], conv[0], conv[3]):
                layer.bias.zero_()
            limit_charge(mlp, {"1": 1.5 / 2, "3": 1.5})
            limit_charge(conv, {"0": 1.9 / 2, "3": 1.45})
        else:
            for p in [*mlp.parameters(), *conv.parameters()]:
                p.mul_(2.0)
    return {"mlp": mlp, "conv": conv}


def inputs(pulse: int, density: float, seed: int = 1) -> torch.Tensor:
    """x [T, 24, 1, 8, 8]: binary frames for the first ``pulse`` steps, then nothing."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(T, 24, 1, 8, 8)
    x[:pulse] = (torch.rand(pulse, 24, 1, 8, 8, generator=generator) < density).float()
    return x


def spikeacc_spikes(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Each neuron layer's spikes per step, [T, B, ...]."""
    program = graph.of(net)
    with torch.no_grad():
        spikes, _ = lif_forward(program, Inputs(x, T, net, program), CallContext(x.shape[1]))
    return spikes


def snntorch_spikes(graph_: object, x: torch.Tensor) -> list[torch.Tensor]:
    snn, importer, utils = require("snntorch"), require("snntorch.import_nir"), require("snntorch.utils")
    module = importer.import_from_nir(graph_)
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
    return [torch.stack(layer, 1) for layer in zip(*per_sample)]  # [T, B, ...] per layer


def norse_spikes(graph_: object, x: torch.Tensor, dt: float) -> list[torch.Tensor]:
    norse = require("norse.torch")
    logging.getLogger().setLevel(logging.ERROR)  # Norse logs a warning for every r
    module = norse.from_nir(graph_, dt=dt)
    lif_names = [name for name, node in graph_.nodes.items() if type(node).__name__ == "LIF"]
    per_sample = []
    for b in range(x.shape[1]):
        state, steps = None, []
        with torch.no_grad():
            for t in range(x.shape[0]):
                _, state = module(x[t, b], state)
                steps.append([state.cache[name].clone() for name in lif_names])
        per_sample.append([torch.stack(layer) for layer in zip(*steps)])
    return [torch.stack(layer, 1) for layer in zip(*per_sample)]


def compare(ours: list[torch.Tensor], theirs: list[torch.Tensor]) -> tuple[int, float]:
    """(how many samples no neuron fires twice in, in either; the agreement over all samples),
    asserting equal spikes per step on the former."""
    assert [s.shape for s in ours] == [s.shape for s in theirs]
    twice = torch.zeros(ours[0].shape[1], dtype=torch.bool)
    for spikes in (*ours, *theirs):
        twice |= spikes.sum(0).flatten(1).amax(1) > 1
    for a, b in zip(ours, theirs):
        assert torch.equal(a[:, ~twice], b[:, ~twice].to(a.dtype))
    equal = sum(int((a == b.to(a.dtype)).sum()) for a, b in zip(ours, theirs))
    return int((~twice).sum()), equal / sum(a.numel() for a in ours)


def consumer_spikes(net: nn.Module, target: str, x: torch.Tensor) -> list[torch.Tensor]:
    """The network exported for ``target``, imported and run by the consumer's own code."""
    exported = snir.export(net, target=target, allow_lossy=True)
    dt = snir.CONSUMERS[target][0]
    assert exported.metadata["dt"] == dt and exported.metadata["target"].startswith(target)
    return snntorch_spikes(exported, x) if target == "snntorch" else norse_spikes(exported, x, dt)


@pytest.mark.parametrize("name", ["mlp", "conv"])
@pytest.mark.parametrize("target", ["snntorch", "norse"])
def test_consumers_reproduce_every_spike_where_no_neuron_fires_twice(name, target):
    net, x = networks(at_most_one_spike=True)[name], inputs(pulse=2, density=0.9)
    ours = spikeacc_spikes(net, x)
    checked, agreement = compare(ours, consumer_spikes(net, target, x))
    assert checked == x.shape[1] and agreement == 1.0
    assert all(s.sum() > 0 for s in ours)  # every layer fires


@pytest.mark.parametrize("name", ["mlp", "conv"])
@pytest.mark.parametrize("target", ["snntorch", "norse"])
def test_consumers_agree_on_active_networks_until_a_second_spike(name, target):
    """Neurons fire again from the membrane spikeacc keeps (h - V_th), which NIR resets to 0:
    where no neuron fires twice the spikes are equal; over all samples most are
    (benchmarks/nir_consumers.py measures how many)."""
    net, x = networks()[name], inputs(pulse=3, density=0.5)
    _, agreement = compare(spikeacc_spikes(net, x), consumer_spikes(net, target, x))
    assert 0.85 < agreement < 1.0


def test_at_a_dt_snntorch_misreads_export_warns_and_its_import_fires_nothing():
    net, x = networks()["mlp"], inputs(pulse=3, density=0.5)
    with pytest.warns(UserWarning, match="always steps with dt = 1e-4"):
        exported = snir.export(net, dt=1.0, target="snntorch", allow_lossy=True)
    assert all(s.sum() == 0 for s in snntorch_spikes(exported, x))  # beta = 1 - 1e-4 / tau: silent


def test_norse_reads_average_pooling_as_the_conv_that_computes_it():
    net = networks()["conv"]
    plain, for_norse = (snir.export(net, target=target, allow_lossy=True) for target in ("snntorch", "norse"))
    kinds = [type(node).__name__ for node in plain.nodes.values()]
    assert "AvgPool2d" in kinds and "AvgPool2d" not in [type(n).__name__ for n in for_norse.nodes.values()]
    pooling = snir.load(for_norse, dt=1e-3).layers["2"]  # the first pooling, read back as a Conv2d
    x = torch.rand(3, 4, 8, 8)
    torch.testing.assert_close(pooling(x), net[2](x), rtol=1e-6, atol=1e-7)


def snntorch_network(snn, reset_mechanism: str, at_most_one_spike: bool) -> nn.Sequential:
    """Linear -> Leaky -> Linear -> Leaky(output), per-neuron beta and threshold tensors (what
    snnTorch's exporter needs to pass NIR's type check); ``at_most_one_spike`` as ``networks``."""
    def leaky(n: int, **extra) -> nn.Module:
        return snn.Leaky(beta=torch.full((n,), 0.8), threshold=torch.full((n,), 0.9), init_hidden=True,
                         reset_mechanism=reset_mechanism, **extra)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), leaky(16), nn.Linear(16, 4), leaky(4, output=True))
    with torch.no_grad():
        if at_most_one_spike:
            net[0].bias.zero_()
            net[2].bias.zero_()
            limit_charge(net, {"0": 0.85, "2": 1.7})  # charges below 2 V_th = 1.8 over a 2-step pulse
        else:
            for p in net.parameters():
                p.mul_(2.0)
    return net


@pytest.mark.parametrize("reset_mechanism, at_most_one_spike", [
    ("subtract", True), ("zero", True), ("none", True), ("zero", False)])
def test_spikeacc_reads_graphs_snntorch_exported(reset_mechanism, at_most_one_spike):
    """snnTorch's exporter writes every Leaky as NIR's LIF (v_reset = 0, whatever its reset):
    where no neuron fires twice every spike agrees; with its zero reset, NIR's own, every
    spike agrees on an active network too. Without a reset snnTorch's neurons fire on from
    one charge while the membrane decays (so several times), which NIR's reset stops."""
    snn, exporter, utils = require("snntorch"), require("snntorch.export_nir"), require("snntorch.utils")
    net = snntorch_network(snn, reset_mechanism, at_most_one_spike)
    generator = torch.Generator().manual_seed(2)
    x = torch.zeros(T, 32, 10)
    x[:2] = (torch.rand(2, 32, 10, generator=generator) < 0.9).float()
    hidden: list[torch.Tensor] = []
    net[1].register_forward_hook(lambda m, args, out: hidden.append(out))
    utils.reset(net)
    with torch.no_grad():
        outputs = [net(x_t)[0] for x_t in x]
    theirs = [torch.stack(hidden), torch.stack(outputs)]
    loaded = snir.load(exporter.export_to_nir(net, x[0, :1], ignore_dims=[0]), dt=1e-4)
    checked, agreement = compare(spikeacc_spikes(loaded, x), theirs)
    assert theirs[0].sum() > 0 and theirs[1].sum() > 0
    if reset_mechanism == "none":
        assert 0.5 < agreement < 1.0
    else:
        assert agreement == 1.0 and checked == (x.shape[1] if at_most_one_spike else checked)
