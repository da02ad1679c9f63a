"""The ASF-BP paper's networks (models.py: lenet5, vgg7, dvs-conv) with every method."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from spikeacc import LIF, methods
from spikeacc.models import MODELS, build

TINY = {  # name: (sample_shape, small widths)
    "lenet5": ((1, 28, 28), (2, 3, 8)),
    "vgg7": ((3, 16, 16), (2, 2, 3, 3, 3, 8)),
    "dvs-conv": ((2, 32, 32), (2, 3, 4, 8)),
}


@pytest.mark.parametrize("name, shape, layers, flat", [
    ("lenet5", (1, 28, 28), 3, 50 * 7 * 7),
    ("vgg7", (3, 32, 32), 6, 128 * 8 * 8),
    ("dvs-conv", (2, 128, 128), 4, 128 * 4 * 4),
])
def test_paper_shapes(name, shape, layers, flat):
    net = build(name, shape, 10)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert sum(isinstance(m, LIF) for m in net) == layers and linears[-2].in_features == flat
    assert all(m.bias is None for m in net if isinstance(m, nn.Conv2d))
    assert methods.spiking_inference(net, torch.rand(2, *shape), T=1).logits.shape == (2, 10)


def test_bad_shapes_are_value_errors():
    for name in TINY:
        with pytest.raises(ValueError):
            build(name, (784,), 10)
        with pytest.raises(ValueError):
            build(name, (1, 3, 3), 10)
    with pytest.raises(ValueError):
        build("vgg7", (3, 32, 32), 10, hidden=(4, 4))


@pytest.mark.parametrize("method", methods.names())
@pytest.mark.parametrize("name", list(TINY))
def test_every_method_trains_paper_models(method, name):
    assert name in MODELS
    shape, widths = TINY[name]
    torch.manual_seed(0)
    net = build(name, shape, 4, hidden=widths)
    T = 2  # batch 3 != T: base.Inputs reads [T, 1*28*28...] as a sequence when B == T and C == 1
    x = torch.rand(T, 3, *shape) if name == "dvs-conv" else torch.rand(3, *shape)
    y = torch.tensor([1, 3, 0])
    trainer = methods.get(method, T=T)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss, logits = trainer.step(net, optimizer, x, y)
    assert torch.isfinite(loss) and logits.shape == (3, 4)
    inference = trainer.infer(net, x)
    assert inference.logits.shape == (3, 4)
    assert [c.shape for c in inference.spike_counts] == [(3,)] * sum(isinstance(m, LIF) for m in net)


@pytest.mark.parametrize("name", list(TINY))
def test_asf_with_pooling_neurons_trains_paper_models(name):
    shape, widths = TINY[name]
    torch.manual_seed(0)
    net = build(name, shape, 4, hidden=widths)
    x = torch.rand(2, 3, *shape) if name == "dvs-conv" else torch.rand(3, *shape)  # T = 2 != batch 3
    trainer = methods.get("asf", T=2, pool_v_th=0.75)
    loss, _ = trainer.step(net, torch.optim.SGD(net.parameters(), lr=0.1), x, torch.tensor([1, 3, 0]))
    assert torch.isfinite(loss)
    pools = [s["layer"] for s in trainer.stats() if s["layer"].startswith("pool")]
    assert pools == {"lenet5": ["pool.2", "pool.5"], "vgg7": ["pool.4", "pool.11"],  # Sequential indices
                     "dvs-conv": ["pool.2", "pool.5", "pool.8"]}[name]


def test_fc_bias_false_is_the_authors_networks():
    """The authors' networks (neural-lab/ASF-BP: lenet5.py, vgg7.py, dvs_cifar10_ASF.py)
    have no bias anywhere; their LeNet-5 is conv5x5 20, conv5x5 50, fc 2450 -> 200 -> 10."""
    lenet = build("lenet5", (1, 28, 28), 10, fc_bias=False)
    assert [tuple(p.shape) for p in lenet.parameters()] == [(20, 1, 5, 5), (50, 20, 5, 5), (200, 2450), (10, 200)]
    for name, (shape, widths) in TINY.items():
        net = build(name, shape, 4, hidden=widths, fc_bias="false")
        assert all(m.bias is None for m in net if isinstance(m, (nn.Linear, nn.Conv2d)))
        assert sum(p.numel() for p in net.parameters()) < sum(p.numel() for p in build(name, shape, 4, hidden=widths).parameters())


def test_model_options_are_read_and_checked():
    from spikeacc.models import read_options
    assert read_options("dvs-conv", [("input_pool", "2"), ("fc_bias", "off")]) == {"input_pool": 2, "fc_bias": False}
    with pytest.raises(ValueError, match="model 'conv' has no option fc_bias; its options: none"):
        build("conv", (1, 8, 8), 3, fc_bias=False)
    with pytest.raises(ValueError, match="model 'mlp' has no option fc_bias; its options: zero_bias"):
        build("mlp", (1, 8, 8), 3, fc_bias=False)
