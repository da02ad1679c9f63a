"""ASF-BP (methods/asf.py) and its IF neuron (neurons/if_neuron.py), in float64."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeacc import methods
from spikeacc.methods.asf import ASF, AdaptiveGain, accumulated_flow
from spikeacc.methods.base import Inputs
from spikeacc.models import MLP, ConvNet, SpikingNet, Synapse
from spikeacc.neurons import LIF
from spikeacc.neurons.if_neuron import IF



pytestmark = pytest.mark.usefixtures("float64")


def if_step(v_prev, current, v_th, leak=1.0):
    v = leak * v_prev + current
    spike = (v >= v_th).to(v.dtype)
    return v * (1 - spike), spike


def reference_counts(net, x_seq, v_th=1.0, leak=1.0, pool_v_th=None):
    """Straightforward per-step simulation, all layers per step: O_l per hidden layer, and
    with ``pool_v_th`` also the counts of IF neurons after each AvgPool2d of spikes
    (synapses 1.. of [*hidden, readout])."""
    synapses = [*net.hidden, net.readout]
    v_mems, counts = [0.0] * len(synapses), [0.0] * len(synapses)
    pool_v, pool_counts = [0.0] * len(synapses), [None] * len(synapses)
    for x_t in x_seq:
        h = x_t
        for layer, synapse in enumerate(synapses):
            if pool_v_th is not None and layer > 0 and any(isinstance(m, nn.AvgPool2d) for m in synapse.pre):
                pool_v[layer], h = if_step(pool_v[layer], synapse.pre(h), pool_v_th)
                pool_counts[layer] = h if pool_counts[layer] is None else pool_counts[layer] + h
                current = F.linear(h, synapse.op.weight, synapse.op.bias) if isinstance(synapse.op, nn.Linear) \
                    else F.conv2d(h, synapse.op.weight, synapse.op.bias, padding=synapse.op.padding)
            else:
                current = synapse(h)
            if layer == len(net.hidden):
                break
            v_mems[layer], h = if_step(v_mems[layer], current, v_th, leak)
            counts[layer] = counts[layer] + h
    return (counts[:-1], pool_counts) if pool_v_th is not None else counts[:-1]


def small_mlp(seed=0, sizes=(6, 5, 4), n_classes=3):
    torch.manual_seed(seed)
    net = MLP(sizes[0], list(sizes[1:]), n_classes)
    with torch.no_grad():
        for synapse in net.hidden:
            synapse.op.weight.mul_(3.0)
    return net


# (d) forward spike counts ----------------------------------------------------------------

def test_if_neuron_hard_reset_and_leak():
    current = torch.tensor([0.25, 0.25, 0.25, 0.25, 0.6, 0.6]).view(6, 1)
    spikes, v_last = IF().run(current)
    assert spikes.flatten().tolist() == [0, 0, 0, 1, 0, 1]  # 4 x 0.25 = 1 >= V_th, reset to 0
    assert v_last.item() == 0.0  # 0.6 + 0.6 >= V_th: reset after the last spike
    spikes, _ = IF(v_th=1.0, leak=0.5).run(current)
    assert spikes.flatten().tolist() == [0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError):
        IF(v_th=0.0)
    with pytest.raises(ValueError):
        IF(leak=1.5)


@pytest.mark.parametrize("chunk", [None, 1, 3])
@pytest.mark.parametrize("leak", [1.0, 0.8])
def test_forward_counts_equal_per_step_simulation(chunk, leak):
    net = small_mlp()
    torch.manual_seed(1)
    x = torch.rand(7, 4, 6)  # [T, B, features] sequence input
    flow = accumulated_flow(net, Inputs(x, 7, net), IF(1.0, leak), chunk)
    o_in, counts = flow.o_in, flow.counts
    expected = reference_counts(net, x, 1.0, leak)
    torch.testing.assert_close(o_in, x.sum(0), rtol=1e-14, atol=1e-14)
    for got, want in zip(counts, expected):
        assert torch.equal(got, want)
    assert sum(c.sum() for c in counts) > 0  # the check is not vacuous


def test_forward_counts_conv_with_pooling_static_input():
    torch.manual_seed(2)
    net = ConvNet((1, 8, 8), (3, 4), 3)
    x = torch.rand(2, 1, 8, 8) * 2
    method = ASF(T=6, v_th=0.5, chunk=4)
    inference = method.infer(net, x)
    expected = reference_counts(net, x.expand(6, *x.shape), v_th=0.5)
    assert [c.tolist() for c in inference.spike_counts] == [
        e.reshape(2, -1).sum(1).tolist() for e in expected]
    assert all(c.sum() > 0 for c in inference.spike_counts)


def test_forward_counts_with_pooling_neurons():
    torch.manual_seed(11)
    net = ConvNet((1, 8, 8), (3, 4), 3)
    x = torch.rand(7, 2, 1, 8, 8) * 2
    flow = accumulated_flow(net, Inputs(x, 7, net), IF(0.5), 3, pool_neuron=IF(0.75))
    counts, pool_counts = reference_counts(net, x, v_th=0.5, pool_v_th=0.75)
    assert flow.pool_counts[0] is None and pool_counts[0] is None
    for got, want in zip(flow.counts + flow.pool_counts[1:], counts + pool_counts[1:]):
        assert torch.equal(got, want) and want.sum() > 0


def test_accumulated_input_equals_sum_of_step_currents():
    """X_l = W O_{l-1} + T b equals sum_t (W s[t] + b) up to rounding (linear synapse)."""
    net = small_mlp()
    torch.manual_seed(3)
    x = torch.rand(9, 4, 6)
    o_in = accumulated_flow(net, Inputs(x, 9, net), IF(), None).o_in
    step_sum = sum(net.hidden[0](x_t) for x_t in x)
    torch.testing.assert_close(net.hidden[0](o_in, bias_scale=9.0), step_sum, rtol=1e-12, atol=1e-12)


# (a) backward equals the hand-written formula -------------------------------------------

def test_backward_equals_hand_written_formula():
    net = small_mlp(seed=4)
    T, v_th = 12, 0.8
    torch.manual_seed(5)
    x = torch.rand(5, 6)
    y = torch.tensor([0, 1, 2, 1, 0])
    method = ASF(T=T, v_th=v_th)
    method.loss_and_grad(net, x, y)

    (W1, b1), (W2, b2) = [(s.op.weight.detach(), s.op.bias.detach()) for s in net.hidden]
    Wo, bo = net.readout.op.weight.detach(), net.readout.op.bias.detach()
    O0 = T * x
    O1, O2 = reference_counts(net, x.expand(T, *x.shape), v_th)
    X1, X2 = O0 @ W1.T + T * b1, O1 @ W2.T + T * b2
    k1 = 0.6 * O1[X1 >= O1].sum() / X1[X1 >= O1].sum() + 0.4
    k2 = 0.6 * O2[X2 >= O2].sum() / X2[X2 >= O2].sum() + 0.4
    logits = O2 @ Wo.T / (v_th * T) + bo
    d_logits = 2 * (logits - F.one_hot(y, 3)) / len(y)  # d/dy of mean_b sum_k (y - onehot)^2
    d_O2 = d_logits @ Wo / (v_th * T)
    g2 = d_O2 * k2 * (X2 > 0)  # dL/dX2
    d_O1 = g2 @ W2
    g1 = d_O1 * k1 * (X1 > 0)
    expected = {
        "readout.op.weight": d_logits.T @ O2 / (v_th * T), "readout.op.bias": d_logits.sum(0),
        "hidden.1.op.weight": g2.T @ O1, "hidden.1.op.bias": T * g2.sum(0),
        "hidden.0.op.weight": g1.T @ O0, "hidden.0.op.bias": T * g1.sum(0),
    }
    for name, param in net.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-10, atol=1e-12)
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0
    stats = method.stats()
    assert stats[0]["k"] == pytest.approx(k1.item()) and stats[1]["k"] == pytest.approx(k2.item())


def pooled_net():
    """x [1, 4, 4] -> 1x1 conv (2 ch) -> IF -> [avgpool2, flatten] linear 8 -> 5 -> IF -> readout 3."""
    torch.manual_seed(12)
    hidden = [Synapse(nn.Conv2d(1, 2, 1)), Synapse(nn.Linear(8, 5), pre=[nn.AvgPool2d(2), nn.Flatten()])]
    net = SpikingNet(hidden, Synapse(nn.Linear(5, 3)), LIF(), (1, 4, 4))
    with torch.no_grad():
        net.hidden[0].op.weight.copy_(torch.tensor([1.5, 0.9]).view(2, 1, 1, 1))
        net.hidden[1].op.weight.mul_(4.0)
    return net


def pool_adjoint(grad_pooled):
    """Backward of AvgPool2d(2) + Flatten: [B, 2*2*2] -> [B, 2, 4, 4], each pixel gets 1/4."""
    return grad_pooled.view(-1, 2, 2, 2).repeat_interleave(2, 2).repeat_interleave(2, 3) / 4


@pytest.mark.parametrize("pool_v_th", [None, 0.75])
def test_backward_through_pooling_equals_hand_written_formula(pool_v_th):
    net, T = pooled_net(), 10
    x, y = torch.rand(3, 1, 4, 4), torch.tensor([2, 0, 1])
    method = ASF(T=T, pool_v_th=pool_v_th)
    method.loss_and_grad(net, x, y)

    (W1, b1), (W2, b2), (Wo, bo) = [(s.op.weight.detach(), s.op.bias.detach()) for s in [*net.hidden, net.readout]]
    counts = reference_counts(net, x.expand(T, *x.shape), pool_v_th=pool_v_th)
    (O1, O2), Op = (counts[0], counts[1][1]) if pool_v_th else (counts, None)
    O0 = T * x
    X1 = W1.view(1, 2, 1, 1) * O0 + T * b1.view(1, 2, 1, 1)  # 1x1 convolution
    P = F.avg_pool2d(O1, 2).flatten(1)
    into2 = P if pool_v_th is None else Op
    X2 = into2 @ W2.T + T * b2

    def k_fit(x_acc, o_count, masked=True):
        inside = x_acc >= o_count if masked else torch.ones_like(x_acc, dtype=torch.bool)
        return 0.6 * o_count[inside].sum() / x_acc[inside].sum() + 0.4

    k1, k2 = k_fit(X1, O1), k_fit(X2, O2)
    logits = O2 @ Wo.T / T + bo
    d_logits = 2 * (logits - F.one_hot(y, 3)) / len(y)
    g2 = (d_logits @ Wo / T) * k2 * (X2 > 0)
    d_into2 = g2 @ W2
    d_P = d_into2 if pool_v_th is None else d_into2 * k_fit(P, Op, masked=False) * (P > 0)
    g1 = pool_adjoint(d_P) * k1 * (X1 > 0)
    expected = {
        "readout.op.weight": d_logits.T @ O2 / T, "readout.op.bias": d_logits.sum(0),
        "hidden.1.op.weight": g2.T @ into2, "hidden.1.op.bias": T * g2.sum(0),
        "hidden.0.op.weight": (g1 * O0).sum((0, 2, 3)).view(2, 1, 1, 1), "hidden.0.op.bias": T * g1.sum((0, 2, 3)),
    }
    for name, param in net.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-10, atol=1e-12)
    assert g1.abs().sum() > 0 and g2.abs().sum() > 0
    assert [s["layer"] for s in method.stats()] == ["hidden.0", "hidden.1"] + (["pool.1"] if pool_v_th else [])


def test_cross_entropy_loss_and_infer_logits():
    net = small_mlp(seed=6)
    x, y = torch.rand(3, 6), torch.tensor([2, 0, 1])
    method = ASF(T=10, loss="ce")
    loss, logits = method.loss_and_grad(net, x, y)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item())
    torch.testing.assert_close(method.infer(net, x).logits, logits)


# (b) linear regime: ASF gradient == rate-coded ANN gradient ----------------------------

def ann_grads(net, x, y, T, v_th, ks):
    """Rate-coded ANN a_l = k_l relu(W a_{l-1} + T b), y = W_out a_L / (V_th T) + b_out, MSE."""
    net.zero_grad()
    h = T * x
    for synapse, k in zip(net.hidden, ks):
        h = k * F.relu(synapse(h, bias_scale=float(T)))
    logits = net.readout(h, bias_scale=v_th * T) / (v_th * T)
    (logits - F.one_hot(y, logits.shape[1])).pow(2).sum(1).mean().backward()
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def asf_grads(net, method, x, y):
    net.zero_grad()
    method.loss_and_grad(net, x, y)
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def test_exactly_linear_if_network_matches_ann_gradient():
    """Dyadic currents V_th/m per step with m | T make every IF count exactly X / V_th, so
    k_hat = 1 = k and the two gradients agree to rounding."""
    net = MLP(4, [4, 4], 3)
    with torch.no_grad():
        net.hidden[0].op.weight.copy_(torch.eye(4))
        net.hidden[0].op.bias.zero_()
        net.hidden[1].op.weight.copy_(0.5 * torch.eye(4).flip(0))  # 0.5 per input spike
        net.hidden[1].op.bias.zero_()
    x = torch.tensor([[1.0, 0.5, 0.25, 0.125], [0.5, 0.5, 1.0, 0.25]])
    y = torch.tensor([1, 2])
    method = ASF(T=16)
    got = asf_grads(net, method, x, y)
    assert [s["k"] for s in method.stats()] == [1.0, 1.0]
    assert [s["fit_error"] for s in method.stats()] == [0.0, 0.0]
    want = ann_grads(net, x, y, 16, 1.0, [1.0, 1.0])
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-12)


def test_near_linear_if_network_matches_ann_gradient():
    """Positive currents far below threshold-per-step, long window: hard reset loses at
    most one step's current per spike (I_max / V_th ~ 3 %) and the final membrane at most
    V_th per neuron (<= 1 % of X here), so counts are k X within a few % and the ASF
    gradient is within 5 % (relative norm; measured <= 3 %) of the rate-coded ANN
    gradient with that k."""
    torch.manual_seed(7)
    net = MLP(10, [12, 8], 4)
    with torch.no_grad():
        for synapse in net.hidden:
            fan_in = synapse.op.weight.shape[1]
            synapse.op.weight.uniform_(0.0, 0.06 / fan_in ** 0.5)
            synapse.op.bias.fill_(0.002)
    x = torch.rand(6, 10) * 0.5 + 0.5
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    T = 3000
    method = ASF(T=T, chunk=None)
    got = asf_grads(net, method, x, y)
    ks = [torch.as_tensor(s["k"]) for s in method.stats()]
    assert all(s["fit_error"] < 0.05 for s in method.stats())
    want = ann_grads(net, x, y, T, 1.0, ks)
    for name in want:
        error = torch.linalg.vector_norm(got[name] - want[name]) / torch.linalg.vector_norm(want[name])
        assert error < 0.05, (name, error.item())


# (c) k estimation on known data ---------------------------------------------------------

def test_k_estimate_masks_x_below_o_and_smooths():
    torch.manual_seed(8)
    x_acc = torch.rand(50, 7) * 20 + 1
    o_count = 0.5 * x_acc
    o_count[:5] = x_acc[:5] + 3.0  # O > X: excluded from the fit
    gain = AdaptiveGain()
    assert gain.estimate(x_acc, o_count).item() == pytest.approx(0.5)
    gain.update(x_acc, o_count)
    assert gain.k.item() == pytest.approx(0.6 * 0.5 + 0.4 * 1.0)
    gain.update(x_acc, o_count)
    assert gain.k.item() == pytest.approx(0.6 * 0.5 + 0.4 * 0.7)
    x_small = torch.zeros(3, 2)
    assert AdaptiveGain().estimate(x_small, x_small).item() == 1.0  # sum X < 1e-3: k_hat = 1


def test_k_estimate_per_channel():
    x_acc = torch.rand(4, 3, 5, 5) + 0.5
    ratios = torch.tensor([0.25, 0.5, 1.0]).view(1, 3, 1, 1)
    gain = AdaptiveGain(per_channel=True)
    torch.testing.assert_close(gain.estimate(x_acc, ratios * x_acc), ratios.flatten())
    gain.update(x_acc, ratios * x_acc)
    assert gain.gain(x_acc).shape == x_acc.shape
    torch.testing.assert_close(gain.gain(x_acc)[0, :, 0, 0], 0.6 * ratios.flatten() + 0.4)


def test_gain_is_zero_where_x_not_positive():
    gain = AdaptiveGain(k=torch.tensor(0.7))
    x_acc = torch.tensor([[-1.0, 0.0, 2.0]])
    assert gain.gain(x_acc).tolist() == [[0.0, 0.0, 0.7]]


def test_k_schedule_every_n_steps():
    net = small_mlp(seed=9)
    x, y = torch.rand(4, 6), torch.tensor([0, 1, 2, 0])
    method = ASF(T=8, k_every=3)
    for _ in range(7):
        method.loss_and_grad(net, x, y)
    assert [s["updates"] for s in method.stats()] == [3, 3]  # steps 0, 3, 6
    frozen = ASF(T=8, k_every=0)
    frozen.loss_and_grad(net, x, y)
    assert [s["k"] for s in frozen.stats()] == [1.0, 1.0]


# options and registry -----------------------------------------------------------------

def test_registry_and_bad_options():
    assert isinstance(methods.get("asf", T=5, v_th=2.0), ASF)
    for bad in ({"loss": "hinge"}, {"k_every": -1}, {"chunk": 0}, {"v_th": -1.0}, {"leak": 0.0},
                {"pool_v_th": 0.0}):
        with pytest.raises(ValueError):
            ASF(T=5, **bad)


def test_step_trains_conv_net_per_channel():
    torch.manual_seed(10)
    net = ConvNet((1, 6, 6), (4, 6), 3).float()  # float32: torch's float64 conv is a slow path
    x, y = torch.rand(6, 1, 6, 6, dtype=torch.float32), torch.tensor([0, 1, 2, 0, 1, 2])
    method = ASF(T=8, per_channel=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = [method.step(net, optimizer, x, y)[0].item() for _ in range(8)]
    assert losses[-1] < losses[0]
    assert [len(s["k"]) for s in method.stats()] == [4, 6]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
