"""The single-spike authors' conventions against references written after their code
(webstorms/Block v2, webstorms/FastSNN v1; float64):

* zero bias initialisation (``MLP(zero_bias=True)``), weights from the same uniform;
* spikeacc's single-spike gradients equal Block's fast method ("fast_naive": the double
  cumsum with the spike's gradient passed straight through) in loss, logits and every
  gradient, trained decays included (atol 1e-10);
* Block's own sequential ("standard") layer and FastSNN v1 (its fast layer and its
  sequential layer) fire the same spikes and give the same loss and readout gradients,
  but other hidden-layer gradients: they pass the gradient through the at-most-once mask
  (and Block's standard layer through the zeroed membrane after the spike), v1's fast
  layer through relu(z (1 - z) + 1) z, whose slope is 0 at the spike;
* v1's readout takes the maximum over time with torch.max, which gives a tie's gradient
  to one step; spikeacc's amax splits it between the tied steps.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from spikeacc.methods.single_spike import SingleSpike
from spikeacc.models import MLP
from tests.test_single_spike import loop_membrane as membrane

pytestmark = pytest.mark.usefixtures("float64")
ATOL = 1e-10
T, TAU_HIDDEN, TAU_READOUT = 24, 10.0, 20.0


class FastSigmoidStep(torch.autograd.Function):
    """H(x) on x > 0, backward 1 / (scale |x| + 1)^2: the authors' FastSigmoid."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.scale = scale
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / (ctx.scale * x.abs() + 1.0) ** 2, None


def double_cumsum(faulty):
    return faulty.cumsum(0).cumsum(0)


def block_fast(current, beta, scale):
    """Block's fast method: S = z where z == 1, else 0, with dS/dz = 1 (straight through)."""
    z = double_cumsum(FastSigmoidStep.apply(membrane(current, beta) - 1.0, scale))
    return z - (z * (z != 1)).detach()


def block_standard(current, beta, scale):
    """Block's standard single-spike layer: spikes and the membrane multiplied by (1 - mask),
    the mask the running maximum of the spikes, all with their gradients."""
    v, mask, spikes = None, torch.zeros_like(current[0]), []
    for current_t in current:
        v = current_t if v is None else beta * v + current_t
        spike = FastSigmoidStep.apply(v - 1.0, scale) * (1 - mask)
        v = v * (1 - mask)
        mask = torch.maximum(mask, spike)
        spikes.append(spike)
    return torch.stack(spikes)


def fastsnn_fast(current, beta, scale):
    """FastSNN v1's fast layer: S = relu(z (1 - z) + 1) z."""
    z = double_cumsum(FastSigmoidStep.apply(membrane(current, beta) - 1.0, scale))
    return F.relu(z * (1 - z) + 1) * z


def fastsnn_sequential(current, beta, scale):
    """FastSNN v1's sequential single-spike layer: no membrane reset, spikes times (1 - mask)."""
    v, mask, spikes = None, torch.zeros_like(current[0]), []
    for current_t in current:
        v = current_t if v is None else beta * v + current_t
        spike = FastSigmoidStep.apply(v - 1.0, scale) * (1 - mask)
        mask = torch.maximum(mask, spike)
        spikes.append(spike)
    return torch.stack(spikes)


def reference(net, x, y, layer, scale, readout, betas=None):
    """Loss of the 784-H-10 network of the authors' code (hidden ``layer``, leaky readout
    summed or maxed over time by torch.max); betas: (hidden, readout) decays."""
    hidden, out = net[1], net[3]
    beta_hidden, beta_readout = betas or (math.exp(-1 / TAU_HIDDEN), math.exp(-1 / TAU_READOUT))
    spikes = layer(hidden(x), beta_hidden, scale)  # [T, B, H]
    v_out = membrane(out(spikes), beta_readout)  # [T, B, K]
    logits = v_out.sum(0) if readout == "sum" else torch.max(v_out, 0)[0]
    return F.cross_entropy(logits, y), logits, spikes


def problem(seed=0, gain=3.0):
    torch.manual_seed(seed)
    net = MLP(20, [16], 4)
    with torch.no_grad():
        net[1].weight.mul_(gain)
    x = (torch.rand(T, 6, 20) < 0.2).double()
    return net, x, torch.randint(0, 4, (6,))


def gradients(net, loss):
    net.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in net.named_parameters()}


def ours(net, x, y, **options):
    method = SingleSpike(T, **options)
    net.zero_grad(set_to_none=True)
    loss, logits = method.loss_and_grad(net, x, y)
    return loss, logits, {name: p.grad.clone() for name, p in net.named_parameters()}, method


def test_zero_bias_initialisation_is_the_authors():
    """Block's LinearNeurons: weights U(-sqrt(1/n_in), sqrt(1/n_in)), bias 0."""
    torch.manual_seed(0)
    net = MLP(784, [1000], 10, zero_bias=True)
    for layer in (net[1], net[3]):
        bound = math.sqrt(1 / layer.in_features)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        assert layer.weight.abs().max() <= bound
        assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # a uniform's std
    assert MLP(784, [1000], 10)[1].bias.abs().sum() > 0  # PyTorch's default draws them


@pytest.mark.parametrize("readout", ["sum", "max"])
def test_gradients_equal_block_fast_method(readout):
    net, x, y = problem()
    loss, logits, got, _ = ours(net, x, y, readout=readout)
    ref_loss, ref_logits, spikes = reference(net, x, y, block_fast, 10.0, readout)
    want = gradients(net, ref_loss)
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=0, atol=ATOL)
    torch.testing.assert_close(logits, ref_logits.detach(), rtol=0, atol=ATOL)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=ATOL, msg=name)
    assert 0 < spikes.sum() < spikes[0].numel()  # some neurons fire, not all


def test_gradients_equal_block_fast_method_with_trained_decays():
    """Block trains one decay per hidden neuron and per output, clamped to [0, 1]."""
    net, x, y = problem(seed=1)
    method = SingleSpike(T, trainable_decay=True)
    (hidden_decay,), readout_decay = method.prepare(net)
    with torch.no_grad():
        hidden_decay.beta_raw.uniform_(0.7, 0.98)
        readout_decay.beta_raw.uniform_(0.8, 0.99)
    loss, _, got, _ = ours(net, x, y, trainable_decay=True)
    betas = (hidden_decay.beta_raw.clamp(0, 1), readout_decay.beta_raw.clamp(0, 1))
    ref_loss, _, _ = reference(net, x, y, block_fast, 10.0, "sum", betas)
    want = gradients(net, ref_loss)
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=0, atol=ATOL)
    assert {"2.single_spike.beta_raw", "3.single_spike_readout.beta_raw"} <= set(want)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=ATOL, msg=name)
        assert want[name].abs().sum() > 0


@pytest.mark.parametrize("layer, scale, readout", [(block_standard, 10.0, "sum"), (fastsnn_fast, 100.0, "max"),
                                                   (fastsnn_sequential, 100.0, "max")])
def test_block_standard_and_fastsnn_differ_in_the_hidden_gradients_only(layer, scale, readout):
    net, x, y = problem(seed=2)
    loss, logits, got, _ = ours(net, x, y, scale=scale, readout=readout)
    ref_loss, ref_logits, spikes = reference(net, x, y, layer, scale, readout)
    _, _, fast_spikes = reference(net, x, y, block_fast, scale, readout)
    want = gradients(net, ref_loss)
    assert torch.equal(spikes.detach(), fast_spikes.detach())  # the same spikes
    torch.testing.assert_close(loss, ref_loss.detach(), rtol=0, atol=ATOL)
    torch.testing.assert_close(logits, ref_logits.detach(), rtol=0, atol=ATOL)
    for name in ("3.weight", "3.bias"):  # the readout's: from the same spikes
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=ATOL, msg=name)
    for name in ("1.weight", "1.bias"):  # the hidden layer's: other gradients through the spikes
        assert (got[name] - want[name]).abs().max() > 1e-3 * want[name].abs().max(), name


def test_max_readout_ties_split_the_gradient_where_torch_max_gives_it_to_one_step():
    """No hidden spike and zero biases: the readout membrane is 0 at every step, a T-way tie."""
    net, x, y = problem(seed=3, gain=0.0)
    with torch.no_grad():
        net[1].bias.zero_()
        net[3].bias.zero_()
    _, logits, got, _ = ours(net, x, y, readout="max")
    ref_loss, _, spikes = reference(net, x, y, fastsnn_fast, 10.0, "max")
    want = gradients(net, ref_loss)
    assert spikes.sum() == 0 and torch.equal(logits, torch.zeros_like(logits))
    d_logits = torch.softmax(logits, 1) - F.one_hot(y, 4)  # dL/dlogits * B
    rise = sum(sum(math.exp(-k / TAU_READOUT) for k in range(t + 1)) for t in range(T))  # sum_t dv[t]/db
    torch.testing.assert_close(got["3.bias"], d_logits.mean(0) * rise / T, rtol=0, atol=ATOL)  # split over T
    torch.testing.assert_close(want["3.bias"], d_logits.mean(0), rtol=0, atol=ATOL)  # all to step 0 (v[0] = b)
