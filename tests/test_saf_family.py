"""Exactness of the SAF family against slow, obviously-correct references.

All comparisons run in float64; tolerances are stated per test (atol 1e-10 means the
two computations agree to rounding error of a few dozen float64 operations).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikeacc import LIF, ConvNet, MLP, graph, methods
from spikeacc.graph import CallContext
from spikeacc.methods.base import Inputs, spiking_inference
from spikeacc.methods.online import Leaks
from spikeacc.methods.saf import saf_fire, saf_step, weighted_readout
from spikeacc.neurons import accumulation_weight
from spikeacc.neurons.surrogate import derivative

from tests.helpers import (ATOL, assert_bptt_equals_unroll, assert_grads_close, assert_same_loss_and_gradients,
                           assert_saf_spikes_are_the_lif_networks, grads)


pytestmark = pytest.mark.usefixtures("float64")


def make_mlp(seed=0, v_th=1.0, sizes=(12, [9, 7], 4)):
    torch.manual_seed(seed)
    net = MLP(*sizes, neuron=LIF(v_th=v_th))
    for p in net.parameters():  # weights large enough that every layer spikes
        p.data.mul_(3.0)
    return net


def make_conv(seed=0):
    torch.manual_seed(seed)
    net = ConvNet((2, 8, 8), (3, 4), 5)
    for p in net.parameters():
        p.data.mul_(3.0)
    return net


def linears(net):
    return [m for m in net if isinstance(m, nn.Linear)]


def lifs(net):
    return [m for m in net.modules() if isinstance(m, LIF)]


def batch(net, T=None, B=6, seed=1):
    torch.manual_seed(seed)
    shape = (B, *net.sample_shape) if T is None else (T, B, *net.sample_shape)
    return torch.rand(shape), torch.randint(0, net[-1].out_features, (B,))


NETS = {"mlp": make_mlp, "conv": make_conv}


# --- SAF forward is the LIF network --------------------------------------------------

@pytest.mark.parametrize("model", NETS)
@pytest.mark.parametrize("sequence", [False, True])
def test_saf_forward_produces_exactly_the_lif_spikes(model, sequence):
    net, T = NETS[model](), 5
    lif_spikes = assert_saf_spikes_are_the_lif_networks(net, batch(net, T if sequence else None)[0], T)
    assert sum(s.sum() for s in lif_spikes) > 0, "test is vacuous without spikes"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_saf_fire_without_a_graph_gives_the_spikes_of_the_graph_path(dtype):
    torch.manual_seed(0)
    lam, v_th = 0.5, 0.75
    acc_prev = torch.randint(0, 4, (4000,)).to(dtype) / 2  # sums of spikes
    u_hat = torch.rand(4000, dtype=dtype) * 2
    acc_prev[:3000] = 0  # then u[t] = U_hat[t] exactly:
    threshold = torch.full((1000,), v_th, dtype=dtype)
    u_hat[:1000] = threshold  # at the threshold, one float below it, one above
    u_hat[1000:2000] = torch.nextafter(threshold, torch.zeros((), dtype=dtype))
    u_hat[2000:3000] = torch.nextafter(threshold, torch.full((), 2.0, dtype=dtype))
    with_graph = saf_fire(u_hat.clone().requires_grad_(), acc_prev, lam, v_th, "sigmoid", 4.0, False)
    with torch.no_grad():
        plain = saf_fire(u_hat, acc_prev, lam, v_th, "sigmoid", 4.0, False)
    assert with_graph.grad_fn is not None and plain.grad_fn is None and plain.dtype == dtype
    assert torch.equal(plain, with_graph.detach())
    assert plain[:1000].all() and not plain[1000:2000].any() and plain[2000:3000].all()
    assert 0 < plain[3000:].sum() < 1000


@pytest.mark.parametrize("model", NETS)
def test_saf_predictions_equal_the_spiking_network(model):
    net, T = NETS[model](), 6
    x, y = batch(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for name, readout in (("saf-e", "mean"), ("saf-f", "weighted")):
        method = methods.get(name, T=T)
        for _ in range(3):  # weights trained with SAF ...
            method.step(net, optimizer, x, y)
        ours = method.infer(net, x)
        spiking = spiking_inference(net, x, T, readout)  # ... run as a real LIF network
        torch.testing.assert_close(ours.logits, spiking.logits, rtol=0, atol=ATOL)
        assert torch.equal(ours.logits.argmax(1), spiking.logits.argmax(1))
        for ours_count, lif_count in zip(ours.spike_counts, spiking.spike_counts):
            assert torch.equal(ours_count, lif_count)


# --- SAF-E == OTTT-A (Theorem 1) -----------------------------------------------------

@pytest.mark.parametrize("model", NETS)
@pytest.mark.parametrize("sequence", [False, True])
def test_saf_e_loss_and_gradients_equal_ottt_a(model, sequence):
    net, T = NETS[model](), 5
    x, y = batch(net, T if sequence else None)
    assert_same_loss_and_gradients(net, methods.get("ottt-a", T=T), methods.get("saf-e", T=T), x, y)


# --- OTTT against the hand-written formula (OTTT Eq. 8) -------------------------------

def ottt_reference(net, x, y, T, lr=None):
    """OTTT by hand on an MLP: dL[t]/dW_l = delta_l[t] a_hat_{l-1}[t]^T with
    delta_l = sigma'(u_l - V_th) * W_{l+1}^T delta_{l+1}. Returns the summed gradients
    (lr None) or the weights after one SGD update per step (OTTT-O)."""
    neuron = lifs(net)[0]
    lam, v_th = neuron.lam, neuron.v_th
    weights = [m.weight.detach().clone() for m in linears(net)]
    biases = [m.bias.detach().clone() for m in linears(net)]
    grad_w = [torch.zeros_like(w) for w in weights]
    grad_b = [torch.zeros_like(b) for b in biases]
    n_hidden, B = len(weights) - 1, x.shape[0]
    v_mem = [0.0] * n_hidden
    spikes = [0.0] * n_hidden
    traces = [0.0] * (n_hidden + 1)
    for t in range(T):
        c_t = accumulation_weight(lam, t + 1)
        h = x.reshape(B, -1)
        traces[0] = lam * traces[0] + h
        pre_spike_v = []
        for l in range(n_hidden):
            current = h @ weights[l].T + biases[l]
            v_mem[l] = lam * (v_mem[l] - v_th * spikes[l]) + current
            spikes[l] = (v_mem[l] >= v_th).double()
            traces[l + 1] = lam * traces[l + 1] + spikes[l]
            pre_spike_v.append(v_mem[l])
            h = spikes[l]
        out = h @ weights[-1].T + biases[-1]
        delta = (torch.softmax(out, 1) - F.one_hot(y, out.shape[1])) / (B * T)
        step_w = [None] * (n_hidden + 1)
        step_b = [None] * (n_hidden + 1)
        step_w[-1], step_b[-1] = delta.T @ traces[-1], delta.sum(0)
        for l in reversed(range(n_hidden)):
            delta = (delta @ weights[l + 1]) * derivative(neuron.surrogate, pre_spike_v[l] - v_th, neuron.alpha)
            step_w[l], step_b[l] = delta.T @ traces[l], c_t * delta.sum(0)
        for i in range(n_hidden + 1):
            if lr is None:
                grad_w[i] += step_w[i]
                grad_b[i] += step_b[i]
            else:
                weights[i] -= lr * step_w[i]
                biases[i] -= lr * step_b[i]
    return (grad_w, grad_b) if lr is None else (weights, biases)


def test_ottt_a_gradient_equals_hand_written_formula():
    net, T = make_mlp(), 5
    x, y = batch(net)
    _, _, g = grads(net, methods.get("ottt-a", T=T), x, y)
    ref_w, ref_b = ottt_reference(net, x, y, T)
    for i, linear in enumerate(linears(net)):
        torch.testing.assert_close(linear.weight.grad, ref_w[i], rtol=0, atol=ATOL)
        torch.testing.assert_close(linear.bias.grad, ref_b[i], rtol=0, atol=ATOL)


def test_ottt_o_equals_sequence_of_per_step_updates():
    net, T, lr = make_mlp(), 5, 0.3
    x, y = batch(net)
    ref_w, ref_b = ottt_reference(copy.deepcopy(net), x, y, T, lr=lr)
    methods.get("ottt-o", T=T).step(net, torch.optim.SGD(net.parameters(), lr=lr), x, y)
    for i, linear in enumerate(linears(net)):
        torch.testing.assert_close(linear.weight.detach(), ref_w[i], rtol=0, atol=ATOL)
        torch.testing.assert_close(linear.bias.detach(), ref_b[i], rtol=0, atol=ATOL)
    # and it differs from one OTTT-A update, so per-step updating is really happening
    net_a = make_mlp()
    methods.get("ottt-a", T=T).step(net_a, torch.optim.SGD(net_a.parameters(), lr=lr), x, y)
    assert not torch.allclose(linears(net_a)[0].weight, linears(net)[0].weight)


# --- BPTT against a plain autograd unroll ----------------------------------------------

def bptt_reference_loss(net, x, T):
    """Step-by-step unroll (the textbook loop), autograd through everything."""
    B, (*hidden, readout), neurons = x.shape[0], linears(net), lifs(net)
    v_mem = [torch.zeros(()) for _ in hidden]
    spikes = [torch.zeros(()) for _ in hidden]
    outs = []
    for _ in range(T):
        h = x.reshape(B, -1)
        for l, (linear, neuron) in enumerate(zip(hidden, neurons)):
            current = F.linear(h, linear.weight, linear.bias)
            reset = spikes[l].detach() if neuron.detach_reset else spikes[l]
            v_mem[l] = neuron.lam * (v_mem[l] - neuron.v_th * reset) + current
            spikes[l] = neuron.fire(v_mem[l])
            h = spikes[l]
        outs.append(F.linear(h, readout.weight, readout.bias))
    return outs


@pytest.mark.parametrize("detach_reset", [False, True])
def test_bptt_gradient_equals_plain_autograd_unroll(detach_reset):
    net, T = make_mlp(), 5
    for neuron in lifs(net):
        neuron.detach_reset = detach_reset
    x, y = batch(net)
    result = grads(net, methods.get("bptt", T=T), x, y)
    net.zero_grad(set_to_none=True)
    assert_bptt_equals_unroll(net, result, bptt_reference_loss(net, x, T), y, T)


def test_bptt_and_ottt_differ_so_the_equivalence_tests_have_teeth():
    net, T = make_mlp(), 5
    x, y = batch(net)
    _, _, g_bptt = grads(net, methods.get("bptt", T=T), x, y)
    _, _, g_ottt = grads(net, methods.get("ottt-a", T=T), x, y)
    assert not torch.allclose(g_bptt["1.weight"], g_ottt["1.weight"])


# --- SAF-F and Spike Representation (Theorem 2) ----------------------------------------

@pytest.mark.parametrize("model", NETS)
def test_saf_f_with_sr_surrogate_equals_spike_representation_at_unit_threshold(model):
    net, T = NETS[model](), 6
    x, y = batch(net)
    loss_sr, logits_sr, g_sr = grads(net, methods.get("sr", T=T), x, y)
    loss_f, logits_f, g_f = grads(net, methods.get("saf-f", T=T, surrogate="sr"), x, y)
    torch.testing.assert_close(loss_f, loss_sr, rtol=0, atol=ATOL)
    torch.testing.assert_close(logits_f, logits_sr, rtol=0, atol=ATOL)
    assert_grads_close(g_f, g_sr)


def test_saf_f_gradient_is_spike_representation_scaled_by_threshold_per_layer():
    """With V_th != 1, each hidden layer's SR derivative carries 1/V_th where SAF-F's
    carries 1, so the gradient of hidden layer l (counted from the readout, k = 1, 2..)
    is V_th^k times SR's; the readout's is equal."""
    v_th, T = 2.0, 6
    net = make_mlp(v_th=v_th)
    x, y = batch(net)
    _, _, g_sr = grads(net, methods.get("sr", T=T), x, y)
    _, _, g_f = grads(net, methods.get("saf-f", T=T, surrogate="sr"), x, y)
    scale = {"5.weight": 1.0, "5.bias": 1.0,  # readout, then the hidden layers from the top
             "3.weight": v_th, "3.bias": v_th,
             "1.weight": v_th ** 2, "1.bias": v_th ** 2}
    assert_grads_close(g_f, g_sr, scale)
    assert g_sr["1.weight"].abs().sum() > 0


def test_saf_f_final_step_only_graph_matches_full_unroll_with_detached_history():
    """SAF-F's fast path (T-1 steps without a graph) against the slow one: every step
    with a graph, all temporal terms detached, loss on the final weighted readout."""
    net, T = make_mlp(), 6
    x, y = batch(net)
    _, _, g_fast = grads(net, methods.get("saf-f", T=T), x, y)
    net.zero_grad(set_to_none=True)
    program = graph.of(net)
    leaks, ctx = Leaks(program, own=True), CallContext(x.shape[0])
    sums = {}
    for t in range(T - 1):  # every step with a graph, the history detached
        sums, _ = saf_step(program, ctx, leaks, x, t, sums)
        sums = {key: value.detach() for key, value in sums.items()}
    sums, _ = saf_step(program, ctx, leaks, x, T - 1, sums)
    F.cross_entropy(weighted_readout(program, ctx, leaks, sums, T), y).backward()
    assert_grads_close(g_fast, {n: p.grad for n, p in net.named_parameters()})


# --- bad input --------------------------------------------------------------------------

@pytest.mark.parametrize("T", [0, -3, 2.5])
def test_bad_time_steps_are_rejected(T):
    with pytest.raises(ValueError, match="T"):
        methods.get("saf-f", T=T)


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown method"):
        methods.get("nope", T=4)


@pytest.mark.parametrize("name", methods.names())
def test_input_shape_mismatch_is_a_clear_error(name):
    net = make_mlp()
    with pytest.raises(ValueError, match="input shape"):
        methods.get(name, T=3).loss_and_grad(net, torch.rand(4, 13), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        methods.get(name, T=3).loss_and_grad(net, torch.rand(4, 12), torch.zeros(5, dtype=torch.long))


def test_static_batch_of_size_T_is_not_mistaken_for_a_sequence():
    torch.manual_seed(0)
    net, T = MLP(16, [8], 3, sample_shape=(1, 4, 4)), 4
    x_static = torch.rand(T, 1, 4, 4)  # B == T images
    inputs = Inputs(x_static, T, net, graph.of(net))
    assert inputs.static and inputs.batch == T
    x_sequence = torch.rand(T, 1, 1, 4, 4)  # T steps of a batch of one image
    inputs = Inputs(x_sequence, T, net, graph.of(net))
    assert not inputs.static and inputs.batch == 1
    flat_net = MLP(16, [8], 3)
    inputs = Inputs(torch.rand(T, 1, 16), T, flat_net, graph.of(flat_net))  # exact [T, B=1, 16] is a sequence
    assert not inputs.static and inputs.batch == 1
