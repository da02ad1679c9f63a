"""The single-spike method: vectorised == sequential on whole networks (values and
gradients), spike counts, trainable decay, registry."""
import pytest
import torch

from spikeacc import graph, methods
from spikeacc.graph import CallContext
from spikeacc.methods.base import run_window
from spikeacc.methods.single_spike import SingleSpike
from spikeacc.models import MLP, ConvNet

DT = torch.float64


def grads_and_logits(method, net, x, y):
    net.zero_grad(set_to_none=True)
    loss, logits = method.loss_and_grad(net, x, y)
    return loss, logits, [p.grad.clone() for p in net.parameters()]


def scaled(net, gain):
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(gain)
    return net


@pytest.mark.parametrize("readout", ["max", "sum"])
@pytest.mark.parametrize("static", [False, True])
def test_mlp_vectorised_equals_sequential(readout, static):
    torch.manual_seed(0)
    T, B = 20, 5
    net = scaled(MLP(12, [16, 8], 3).double(), 3.0)
    x = torch.rand(B, 12, dtype=DT) if static else (torch.rand(T, B, 12) < 0.3).to(DT)
    y = torch.randint(0, 3, (B,))
    fast = grads_and_logits(SingleSpike(T, readout=readout), net, x, y)
    slow = grads_and_logits(SingleSpike(T, readout=readout, sequential=True), net, x, y)
    torch.testing.assert_close(fast[:2], slow[:2])
    for g_fast, g_slow in zip(fast[2], slow[2]):
        torch.testing.assert_close(g_fast, g_slow)
    counts = SingleSpike(T).infer(net, x).spike_counts
    assert [c.shape for c in counts] == [(B,), (B,)]
    assert counts[0].sum() > 0 and (counts[0] <= 16).all() and (counts[1] <= 8).all()


def test_convnet_vectorised_equals_sequential():
    torch.manual_seed(1)
    T, B = 10, 2
    net = scaled(ConvNet((2, 8, 8), (4, 6), 3).double(), 2.0)
    x = (torch.rand(T, B, 2, 8, 8) < 0.4).to(DT)
    y = torch.tensor([0, 2])
    fast = grads_and_logits(SingleSpike(T), net, x, y)
    slow = grads_and_logits(SingleSpike(T, sequential=True), net, x, y)
    torch.testing.assert_close(fast[1], slow[1])
    for g_fast, g_slow in zip(fast[2], slow[2]):
        torch.testing.assert_close(g_fast, g_slow)
    inference = SingleSpike(T).infer(net, x)
    assert inference.logits.shape == (B, 3)
    assert (inference.spike_counts[0] <= 4 * 8 * 8).all()


def test_trainable_decay_needs_prepare_and_trains():
    torch.manual_seed(2)
    T = 8
    net = scaled(MLP(6, [5], 2), 3.0)
    x, y = torch.rand(4, 6), torch.tensor([0, 1, 0, 1])
    method = SingleSpike(T, trainable_decay=True)
    with pytest.raises(ValueError, match="prepare"):
        method.step(net, torch.optim.SGD(net.parameters(), lr=0.1), x, y)
    neurons, readout = method.prepare(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [neurons[0].beta_raw.detach().clone(), readout.beta_raw.detach().clone()]
    method.step(net, optimizer, x, y)
    assert neurons[0].beta_raw.shape == (5,) and readout.beta_raw.shape == (2,)  # per neuron, per output
    assert not torch.equal(before[0], neurons[0].beta_raw) and not torch.equal(before[1], readout.beta_raw)
    assert method.prepare(net)[0][0] is neurons[0] and method.prepare(net)[1] is readout
    assert {"2.single_spike.beta_raw", "3.single_spike_readout.beta_raw"} <= set(net.state_dict())


def test_trainable_readout_decay_equals_a_readout_written_by_hand():
    """Logits are sum_t V[t] with V[t] = beta_k V[t-1] + o_k[t] per output k."""
    torch.manual_seed(5)
    T = 6
    net = scaled(MLP(4, [3], 2).double(), 3.0)
    x = torch.rand(3, 4, dtype=DT)
    method = SingleSpike(T, trainable_decay=True)
    _, readout = method.prepare(net)
    with torch.no_grad():
        readout.beta_raw.copy_(torch.tensor([0.5, 0.9], dtype=DT))
    logits = method.predict(net, x)
    spikes = method.infer(net, x)
    site_neurons, _ = method.prepare(net)
    _, per_step = run_window(graph.of(net), CallContext(3), x, 1, T,
                             lambda site, current: site_neurons[0].reference(current)[0])  # [T, B, 2]
    v_mem, total = torch.zeros(3, 2, dtype=DT), torch.zeros(3, 2, dtype=DT)
    for o_t in per_step:
        v_mem = torch.tensor([0.5, 0.9], dtype=DT) * v_mem + o_t
        total = total + v_mem
    torch.testing.assert_close(logits, total, rtol=0, atol=1e-12)
    assert spikes.spike_counts[0].sum() > 0


@pytest.mark.parametrize("name, options", [("single-spike", {}), ("blocks", {"refractory": 2})])
def test_training_reduces_loss(name, options):
    torch.manual_seed(3)
    T = 16
    net = scaled(MLP(10, [32], 2), 2.0)
    x = torch.rand(32, 10)
    y = (x[:, :5].sum(1) > x[:, 5:].sum(1)).long()
    method = methods.get(name, T=T, **options)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2)
    first = method.loss_and_grad(net, x, y)[0]
    for _ in range(12):
        method.step(net, optimizer, x, y)
    assert method.loss_and_grad(net, x, y)[0] < 0.7 * first


def test_bad_options():
    with pytest.raises(ValueError, match="readout"):
        SingleSpike(4, readout="mean")
    with pytest.raises(ValueError, match="membrane form"):
        SingleSpike(4, form="fft")
    with pytest.raises(ValueError, match="input shape"):
        SingleSpike(4).infer(MLP(6, [5], 2), torch.zeros(3, 4, 7))
