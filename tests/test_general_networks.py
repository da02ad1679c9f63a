"""Exactness on general graphs: a residual network with a channel concatenation and
per-layer neuron settings (tau, threshold, surrogate, detached reset), not a chain.

All in float64. ATOL 1e-10: two computations agree to the rounding of a few dozen
float64 operations; the single-spike comparison uses assert_close's float64 defaults
(rtol 1e-7, atol 1e-7) as its chain tests do.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeacc import LIF, methods
from spikeacc.methods.base import spiking_inference
from spikeacc.methods.single_spike import SingleSpike
from spikeacc.neurons import accumulation_weight
from spikeacc.neurons.if_neuron import asf_neuron
from spikeacc.neurons.surrogate import derivative

from tests.helpers import (ATOL, assert_bptt_equals_unroll, assert_grads_close, assert_same_loss_and_gradients,
                           assert_saf_spikes_are_the_lif_networks, grads)

pytestmark = pytest.mark.usefixtures("float64")


class ResCat(nn.Module):
    """lif_b(conv_b(cat[lif_a(conv_a(s)), s]) + s)."""

    def __init__(self, c: int, lif_a: LIF, lif_b: LIF) -> None:
        super().__init__()
        self.conv_a, self.lif_a = nn.Conv2d(c, c, 3, padding=1), lif_a
        self.conv_b, self.lif_b = nn.Conv2d(2 * c, c, 1), lif_b

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        h = self.lif_a(self.conv_a(s))
        return self.lif_b(self.conv_b(torch.cat([h, s], dim=1)) + s)


def per_layer_neurons() -> list[LIF]:
    return [LIF(tau=2.0, v_th=1.0, surrogate="sigmoid", alpha=4.0),
            LIF(tau=3.0, v_th=0.8, surrogate="atan", alpha=2.0, detach_reset=True),
            LIF(tau=4.0, v_th=1.2, surrogate="fast_sigmoid", alpha=3.0)]


def residual_net(neurons: list[LIF] | None = None, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    first, a, b = neurons or per_layer_neurons()
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), first, ResCat(3, a, b), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(2.5)  # every neuron spikes
    net.sample_shape = (2, 8, 8)
    return net


def batch(T: int | None = None, B: int = 5, seed: int = 1):
    torch.manual_seed(seed)
    shape = (B, 2, 8, 8) if T is None else (T, B, 2, 8, 8)
    return torch.rand(shape), torch.randint(0, 4, (B,))


def lif_step(neuron: LIF, state: dict, current: torch.Tensor) -> torch.Tensor:
    """u[t] = lam (u[t-1] - V_th s[t-1]) + I[t], written out (reset detached if asked)."""
    v_mem, spike = state.get(neuron, (0.0, 0.0))
    reset = spike.detach() if neuron.detach_reset and torch.is_tensor(spike) else spike
    v_mem = neuron.lam * (v_mem - neuron.v_th * reset) + current
    spike = neuron.fire(v_mem)
    state[neuron] = (v_mem, spike)
    return spike


def unrolled_outputs(net: nn.Sequential, x: torch.Tensor, T: int) -> list[torch.Tensor]:
    """The textbook loop over t for residual_net, every module called by hand."""
    conv, first, block, pool, flatten, linear = net
    state, outs = {}, []
    for t in range(T):
        x_t = x if x.dim() == 4 else x[t]
        s0 = lif_step(first, state, conv(x_t))
        h = lif_step(block.lif_a, state, block.conv_a(s0))
        s2 = lif_step(block.lif_b, state, block.conv_b(torch.cat([h, s0], 1)) + s0)
        outs.append(linear(flatten(pool(s2))))
    return outs


@pytest.mark.parametrize("sequence", [False, True])
def test_bptt_equals_step_by_step_unroll(sequence):
    net, T = residual_net(), 4
    x, y = batch(T if sequence else None)
    result = grads(net, methods.get("bptt", T=T), x, y)
    net.zero_grad(set_to_none=True)
    assert_bptt_equals_unroll(net, result, unrolled_outputs(net, x, T), y, T)


def test_saf_forward_produces_exactly_the_lif_spikes():
    lif_spikes = assert_saf_spikes_are_the_lif_networks(residual_net(), batch()[0], 5)
    assert all(s.sum() > 0 for s in lif_spikes), "every neuron site spikes"


@pytest.mark.parametrize("sequence", [False, True])
def test_saf_e_loss_and_gradients_equal_ottt_a(sequence):
    net, T = residual_net(), 5
    x, y = batch(T if sequence else None)
    assert_same_loss_and_gradients(net, methods.get("ottt-a", T=T), methods.get("saf-e", T=T), x, y)


def test_saf_e_equals_ottt_a_with_time_shared_dropout():
    net, T = residual_net(), 4
    net.insert(2, nn.Dropout(0.3))  # after the first neuron, in training mode
    x, y = batch()
    torch.manual_seed(7)
    _, _, g_o = grads(net, methods.get("ottt-a", T=T), x, y)
    torch.manual_seed(7)  # the same mask
    _, _, g_s = grads(net, methods.get("saf-e", T=T), x, y)
    assert_grads_close(g_s, g_o)


@pytest.mark.parametrize("name, readout", [("bptt", "mean"), ("ottt-a", "mean"), ("saf-e", "mean"),
                                           ("saf-f", "weighted"), ("sr", "weighted")])
def test_predictions_equal_the_spiking_network(name, readout):
    net, T = residual_net(), 6
    x, y = batch()
    method = methods.get(name, T=T)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2)
    for _ in range(2):  # weights trained with the method ...
        method.step(net, optimizer, x, y)
    ours, spiking = method.infer(net, x), spiking_inference(net, x, T, readout)  # ... run as LIF network
    torch.testing.assert_close(ours.logits, spiking.logits, rtol=0, atol=ATOL)
    for ours_count, lif_count in zip(ours.spike_counts, spiking.spike_counts, strict=True):
        assert torch.equal(ours_count, lif_count)


def test_saf_f_with_sr_surrogate_equals_spike_representation():
    """Theorem 2's setting: one leak and V_th = 1; the neurons still differ in surrogate,
    sharpness and reset detachment (which neither method uses)."""
    neurons = [LIF(tau=2.0, surrogate="atan", alpha=2.0), LIF(tau=2.0, surrogate="rect", detach_reset=True),
               LIF(tau=2.0, surrogate="fast_sigmoid")]
    net, T = residual_net(neurons), 6
    x, y = batch()
    loss_sr, logits_sr, g_sr = grads(net, methods.get("sr", T=T), x, y)
    loss_f, logits_f, g_f = grads(net, methods.get("saf-f", T=T, surrogate="sr"), x, y)
    torch.testing.assert_close(loss_f, loss_sr, rtol=0, atol=ATOL)
    torch.testing.assert_close(logits_f, logits_sr, rtol=0, atol=ATOL)
    assert_grads_close(g_f, g_sr)
    assert g_sr["0.weight"].abs().sum() > 0


@pytest.mark.parametrize("static", [False, True])
def test_single_spike_vectorised_equals_sequential(static):
    net, T = residual_net(), 12
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.6)
    x, y = batch(None if static else T)
    fast = grads(net, SingleSpike(T), x, y)
    slow = grads(net, SingleSpike(T, sequential=True), x, y)
    torch.testing.assert_close(fast[:2], slow[:2])
    for name in fast[2]:
        torch.testing.assert_close(fast[2][name], slow[2][name], msg=name)
    counts = SingleSpike(T).infer(net, x).spike_counts
    assert len(counts) == 3 and all(c.sum() > 0 for c in counts)


# --- hand-written references on a residual MLP with its own leak per neuron ---------------------

class ResMLP(nn.Module):
    """h1 = lif1(fc1(x)); h2 = lif2(fc2(h1)); h3 = lif3(h2 + h1); out(h3)."""

    def __init__(self, taus=(2.0, 3.0, 5.0)) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.fc1, self.lif1 = nn.Linear(6, 5), LIF(tau=taus[0])
        self.fc2, self.lif2 = nn.Linear(5, 5), LIF(tau=taus[1], v_th=0.9)
        self.lif3 = LIF(tau=taus[2], v_th=1.1, surrogate="atan")
        self.out = nn.Linear(5, 3)
        with torch.no_grad():
            self.fc1.weight.mul_(3.0)
            self.fc2.weight.mul_(3.0)

    def forward(self, x):
        h1 = self.lif1(self.fc1(x))
        return self.out(self.lif3(self.lif2(self.fc2(h1)) + h1))


def test_ottt_a_equals_hand_written_formula_with_per_neuron_leaks():
    """dL[t]/dW_l = delta_l[t] a_hat[t]^T with the trace a_hat taken with the leak of
    the neuron that reads it (lambda_2 for fc2's input s1, lambda_1 for fc1's input x),
    and the readout's with the leak of lif3; biases get c[t] of their neuron's leak."""
    net, T = ResMLP(), 6
    x, y = torch.rand(4, 6), torch.tensor([0, 1, 2, 1])
    _, _, g = grads(net, methods.get("ottt-a", T=T), x, y)
    l1, l2, l3 = net.lif1, net.lif2, net.lif3
    W1, b1, W2, b2, Wo, bo = (p.detach() for p in (net.fc1.weight, net.fc1.bias, net.fc2.weight,
                                                    net.fc2.bias, net.out.weight, net.out.bias))
    want = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    u = {1: 0.0, 2: 0.0, 3: 0.0}
    s = {1: 0.0, 2: 0.0, 3: 0.0}
    trace_x, trace_s1, trace_s3 = 0.0, 0.0, 0.0
    for t in range(T):
        u[1] = l1.lam * (u[1] - l1.v_th * s[1]) + x @ W1.T + b1
        s[1] = (u[1] >= l1.v_th).double()
        u[2] = l2.lam * (u[2] - l2.v_th * s[2]) + s[1] @ W2.T + b2
        s[2] = (u[2] >= l2.v_th).double()
        u[3] = l3.lam * (u[3] - l3.v_th * s[3]) + s[2] + s[1]
        s[3] = (u[3] >= l3.v_th).double()
        o = s[3] @ Wo.T + bo
        trace_x = l1.lam * trace_x + x
        trace_s1 = l2.lam * trace_s1 + s[1]
        trace_s3 = l3.lam * trace_s3 + s[3]
        delta_o = (torch.softmax(o, 1) - F.one_hot(y, 3)) / (len(y) * T)
        delta_3 = (delta_o @ Wo) * derivative(l3.surrogate, u[3] - l3.v_th, l3.alpha)
        delta_2 = delta_3 * derivative(l2.surrogate, u[2] - l2.v_th, l2.alpha)
        delta_1 = (delta_3 + delta_2 @ W2) * derivative(l1.surrogate, u[1] - l1.v_th, l1.alpha)
        want["out.weight"] += delta_o.T @ trace_s3
        want["out.bias"] += delta_o.sum(0)
        want["fc2.weight"] += delta_2.T @ trace_s1
        want["fc2.bias"] += accumulation_weight(l2.lam, t + 1) * delta_2.sum(0)
        want["fc1.weight"] += delta_1.T @ trace_x
        want["fc1.bias"] += accumulation_weight(l1.lam, t + 1) * delta_1.sum(0)
    assert_grads_close(g, want)
    assert all(w.abs().sum() > 0 for w in want.values())


def test_asf_equals_hand_written_backward_on_a_residual_network():
    net, T, v_th = ResMLP(), 12, 1.0
    x, y = torch.rand(5, 6), torch.tensor([0, 1, 2, 1, 0])
    method = methods.get("asf", T=T)
    _, _, g = grads(net, method, x, y)
    W1, b1, W2, b2, Wo, bo = (p.detach() for p in (net.fc1.weight, net.fc1.bias, net.fc2.weight,
                                                    net.fc2.bias, net.out.weight, net.out.bias))
    # counts by a per-step IF simulation (hard reset, threshold v_th)
    v1 = v2 = v3 = 0.0
    O1 = O2 = O3 = 0.0
    for _ in range(T):
        v1 = v1 + x @ W1.T + b1
        s1 = (v1 >= v_th).double()
        v1 = v1 * (1 - s1)
        v2 = v2 + s1 @ W2.T + b2
        s2 = (v2 >= v_th).double()
        v2 = v2 * (1 - s2)
        v3 = v3 + s2 + s1
        s3 = (v3 >= v_th).double()
        v3 = v3 * (1 - s3)
        O1, O2, O3 = O1 + s1, O2 + s2, O3 + s3
    O0 = T * x
    X1, X2, X3 = O0 @ W1.T + T * b1, O1 @ W2.T + T * b2, O2 + O1

    def k(x_acc, o_count):
        inside = x_acc >= o_count
        return 0.6 * o_count[inside].sum() / x_acc[inside].sum() + 0.4

    logits = O3 @ Wo.T / (v_th * T) + bo
    d_logits = 2 * (logits - F.one_hot(y, 3)) / len(y)
    g3 = (d_logits @ Wo / (v_th * T)) * k(X3, O3) * (X3 > 0)
    g2 = g3 * k(X2, O2) * (X2 > 0)
    g1 = (g3 + g2 @ W2) * k(X1, O1) * (X1 > 0)  # the residual path and the fc2 path
    want = {"fc1.weight": g1.T @ O0, "fc1.bias": T * g1.sum(0), "fc2.weight": g2.T @ O1,
            "fc2.bias": T * g2.sum(0), "out.weight": d_logits.T @ O3 / (v_th * T), "out.bias": d_logits.sum(0)}
    for name in want:
        torch.testing.assert_close(g[name], want[name], rtol=1e-10, atol=1e-12, msg=name)
    assert all(c.sum() > 0 for c in (O1, O2, O3)) and g1.abs().sum() > 0
    assert [s["layer"] for s in method.stats()] == ["lif1", "lif2", "lif3"]


def test_if_neuron_counts_match_the_method_forward_on_the_residual_network():
    net, T = ResMLP(), 9
    x = torch.rand(3, 6)
    counts = methods.get("asf", T=T).infer(net, x).spike_counts
    v, O = [None] * 3, [0.0] * 3
    neuron = asf_neuron()
    for _ in range(T):
        h1, v[0] = neuron.free_run((x @ net.fc1.weight.T + net.fc1.bias).unsqueeze(0), v[0])
        h2, v[1] = neuron.free_run(net.fc2(h1[0]).unsqueeze(0), v[1])
        h3, v[2] = neuron.free_run((h2[0] + h1[0]).unsqueeze(0), v[2])
        O = [o + h[0].sum(1) for o, h in zip(O, (h1, h2, h3))]
    for got, want in zip(counts, O):
        assert torch.equal(got, want)
