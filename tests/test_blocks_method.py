"""The Blocks method (methods/blocks.py): block by block == the sequential refractory LIF
network on whole networks (loss, logits, every gradient, decays included; float64, atol
1e-10), its deployment step by step == its inference, refractory 0 == spikeacc's
hard-reset LIF, and its options."""
import math

import pytest
import torch

from spikeacc import methods
from spikeacc.methods.blocks import Blocks
from spikeacc.models import MLP, ConvNet
from spikeacc.neurons import LIF

from tests.helpers import ATOL, assert_same_loss_and_gradients
from tests.test_single_spike_method import scaled

DT = torch.float64


def assert_same_as_sequential(net, x, y, T, **options):
    """Loss, logits and every gradient of Blocks == the sequential network's (ATOL)."""
    fast, slow = Blocks(T, **options), Blocks(T, sequential=True, **options)
    if options.get("trainable_decay"):
        fast.prepare(net)
    assert_same_loss_and_gradients(net, fast, slow, x, y)
    return fast


def inputs(static, T, B, features):
    """A static batch [B, features] in [0, 1), or a sequence of spikes [T, B, features]."""
    return torch.rand(B, features, dtype=DT) if static else (torch.rand(T, B, features) < 0.3).to(DT)


@pytest.mark.parametrize("options", [{}, {"readout": "max"}, {"refractory": 2, "block_length": 2},
                                     {"refractory": 6, "block_length": 3}, {"trainable_decay": True}])
@pytest.mark.parametrize("static", [False, True])
def test_mlp_blocks_equal_sequential(options, static):
    torch.manual_seed(0)
    T, B = 20, 5
    net = scaled(MLP(12, [16, 8], 3).double(), 3.0)
    x, y = inputs(static, T, B, 12), torch.randint(0, 3, (B,))
    method = assert_same_as_sequential(net, x, y, T, **options)
    counts = method.infer(net, x).spike_counts
    assert [c.shape for c in counts] == [(B,), (B,)]
    per_neuron_limit = math.ceil(T / (method.refractory + 1))
    assert counts[0].min() > 0 and (counts[0] <= 16 * per_neuron_limit).all()


def test_convnet_blocks_equal_sequential():
    torch.manual_seed(1)
    net = scaled(ConvNet((2, 8, 8), (4, 6), 3).double(), 2.0)
    x = (torch.rand(10, 2, 2, 8, 8) < 0.4).to(DT)
    assert_same_as_sequential(net, x, torch.tensor([0, 2]), 10, refractory=1)


@pytest.mark.parametrize("options", [{}, {"readout": "max", "block_length": 2}, {"trainable_decay": True}])
@pytest.mark.parametrize("static", [False, True])
def test_deployed_step_by_step_equals_inference(options, static):
    torch.manual_seed(2)
    T, B = 16, 4
    net = scaled(MLP(10, [12, 6], 3).double(), 3.0)
    x, method = inputs(static, T, B, 10), Blocks(T, **options)
    if options.get("trainable_decay"):
        method.prepare(net)
        with torch.no_grad():
            for name, p in net.named_parameters():
                if "beta_raw" in name:
                    p.uniform_(0.5, 1.0)
    inference, deployed = method.infer(net, x), method.deploy(net, x)
    torch.testing.assert_close(deployed.logits, inference.logits, rtol=0, atol=ATOL)
    for counts, counts_ref in zip(deployed.spike_counts, inference.spike_counts, strict=True):
        assert torch.equal(counts, counts_ref) and counts.sum() > 0


def test_refractory_zero_is_the_hard_reset_lif_network():
    """R = 0: LIF(beta=exp(-1/tau), reset="hard") under spiking_inference fires the same spikes."""
    torch.manual_seed(3)
    tau, T = 10.0, 12
    lif = LIF(beta=math.exp(-1 / tau), reset="hard", surrogate="fast_sigmoid", alpha=10.0)
    net = scaled(MLP(10, [12, 6], 3, neuron=lif).double(), 3.0)
    x = (torch.rand(T, 4, 10) < 0.4).to(DT)
    blocks = Blocks(T, tau_hidden=tau, refractory=0).infer(net, x)
    lif_network = methods.spiking_inference(net, x, T)
    for counts, counts_ref in zip(blocks.spike_counts, lif_network.spike_counts, strict=True):
        assert torch.equal(counts, counts_ref) and counts.max() > 12


def test_one_block_fires_as_single_spike():
    """R >= T - 1: one block, at most one spike per neuron: single-spike's forward (its
    gradient passes straight through its double cumsum, which the Blocks neuron's does not)."""
    torch.manual_seed(4)
    T = 9
    net = scaled(MLP(10, [12], 3).double(), 3.0)
    x = (torch.rand(T, 4, 10) < 0.4).to(DT)
    blocks, single = Blocks(T, refractory=T - 1).infer(net, x), methods.get("single-spike", T=T).infer(net, x)
    torch.testing.assert_close(blocks.logits, single.logits, rtol=0, atol=ATOL)
    assert torch.equal(blocks.spike_counts[0], single.spike_counts[0]) and blocks.spike_counts[0].sum() > 0


def test_trainable_decay_needs_prepare_and_lives_in_the_network():
    torch.manual_seed(5)
    net = scaled(MLP(6, [5], 2), 3.0)
    x, y = torch.rand(4, 6), torch.tensor([0, 1, 0, 1])
    method = methods.get("blocks", T=8, trainable_decay=True)
    with pytest.raises(ValueError, match="blocks trainable_decay: the optimizer lacks the decay parameters"):
        method.step(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y)
    neurons, readout = method.prepare(net)
    before = [neurons[0].beta_raw.detach().clone(), readout.beta_raw.detach().clone()]
    method.step(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y)
    assert not torch.equal(before[0], neurons[0].beta_raw) and not torch.equal(before[1], readout.beta_raw)
    assert {"2.blocks.beta_raw", "3.blocks_readout.beta_raw"} <= set(net.state_dict())


def test_registry_names_and_bad_options():
    assert isinstance(methods.get("blocks", T=4, refractory="3"), Blocks)
    assert Blocks(4, sequential=True).name == "blocks-seq" and Blocks(4).block_length == 5
    for bad, words in (({"refractory": -1}, "refractory period"), ({"refractory": 2, "block_length": 4}, "block length"),
                       ({"block_length": 0}, "block length"), ({"readout": "mean"}, "readout"),
                       ({"threshold": 0.0}, "threshold"), ({"scale": -1.0}, "sharpness")):
        with pytest.raises(ValueError, match=words):
            methods.get("blocks", T=4, **bad)
