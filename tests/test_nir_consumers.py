"""NIR graphs read by other tools with their own importers (benchmarks/nir_consumers.py runs
the cases and measures the agreement; here they are checked against their bounds).

spikeacc -> consumer: an MLP and a conv network with average pooling, exported for each
consumer (``target``: snnTorch steps with dt = 1e-4, Norse with the dt it is given) and
imported by ``snntorch.import_nir.import_from_nir`` / ``norse.torch.from_nir``, spike per
step and per neuron against spikeacc's own network. spikeacc's LIF subtracts V_th where
NIR resets to v_reset (the export is ``lossy``), so the two agree exactly on every sample
in which no neuron fires twice, in either run: a second spike is the only way a reset can
show. consumer -> spikeacc: snnTorch's own exporter on Leaky networks of each
reset_mechanism, read by ``spikeacc.interop.nir.load``, against snnTorch running them.
"""
from __future__ import annotations

import pytest

from benchmarks import nir_consumers as cases
from spikeacc.interop import nir as snir

from tests.peers import require


@pytest.fixture(autouse=True)
def consumers():
    require("snntorch.import_nir")
    require("norse.torch")


@pytest.mark.parametrize("name", ["mlp", "conv"])
@pytest.mark.parametrize("target", cases.CONSUMERS)
def test_consumers_reproduce_every_spike_where_no_neuron_fires_twice(name, target):
    net, x = cases.networks(single=True)[name], cases.pulse((24, 1, 8, 8), steps=2, density=0.9)
    ours = cases.spikeacc_spikes(net, x)
    found = cases.agreement(ours, cases.consumer_spikes(net, target, x))
    assert found["checked"] == 24 and found["exact"] and found["share"] == 1.0
    assert all(s.sum() > 0 for s in ours)  # every layer fires


@pytest.mark.parametrize("name", ["mlp", "conv"])
@pytest.mark.parametrize("target", cases.CONSUMERS)
def test_consumers_agree_on_active_networks_until_a_second_spike(name, target):
    """Neurons fire again from the membrane spikeacc keeps (h - V_th), which NIR resets to 0."""
    net, x = cases.networks(single=False)[name], cases.pulse((24, 1, 8, 8), steps=3, density=0.5)
    found = cases.agreement(cases.spikeacc_spikes(net, x), cases.consumer_spikes(net, target, x))
    assert found["exact"] and 0.85 < found["share"] < 1.0


def test_exported_for_a_consumer_at_its_dt_and_a_misread_dt_warns():
    net, x = cases.networks(single=False)["mlp"], cases.pulse((24, 1, 8, 8), steps=3, density=0.5)
    for target in cases.CONSUMERS:
        metadata = snir.export(net, target=target, allow_lossy=True).metadata
        assert metadata["dt"] == snir.CONSUMERS[target][0] and metadata["target"].startswith(target)
    with pytest.warns(UserWarning, match="always steps with dt = 1e-4"):
        exported = snir.export(net, dt=1.0, target="snntorch", allow_lossy=True)
    assert all(s.sum() == 0 for s in cases.snntorch_spikes(exported, x))  # beta = 1 - 1e-4 / tau: silent


def test_norse_reads_average_pooling_as_the_conv_that_computes_it():
    import torch

    net = cases.networks(single=False)["conv"]
    plain, for_norse = (snir.export(net, target=target, allow_lossy=True) for target in cases.CONSUMERS)
    assert "AvgPool2d" in [type(n).__name__ for n in plain.nodes.values()]
    assert "AvgPool2d" not in [type(n).__name__ for n in for_norse.nodes.values()]
    pooling = snir.load(for_norse, dt=1e-3).layers["2"]  # the first pooling, read back as a Conv2d
    x = torch.rand(3, 4, 8, 8)
    torch.testing.assert_close(pooling(x), net[2](x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("reset_mechanism, single", [("subtract", True), ("zero", True), ("none", True),
                                                      ("zero", False)])
def test_spikeacc_reads_graphs_snntorch_exported(reset_mechanism, single):
    """snnTorch's exporter writes every Leaky as NIR's LIF (v_reset = 0, whatever its reset):
    where no neuron fires twice every spike agrees; with its zero reset, NIR's own, every
    spike agrees on an active network too. Without a reset snnTorch's neurons fire on from
    one charge while the membrane decays (so several times), which NIR's reset stops."""
    ours, theirs = cases.snntorch_round_trip(reset_mechanism, single)
    found = cases.agreement(ours, theirs)
    assert found["exact"] and theirs[0].sum() > 0 and theirs[1].sum() > 0
    if reset_mechanism == "none":
        assert 0.5 < found["share"] < 1.0
    else:
        assert found["share"] == 1.0 and found["checked"] == (32 if single else found["checked"])
