"""Single-spike LIF: the vectorised layer equals the sequential reference in spikes,
membrane and gradients (float64), including the edge cases of the first-crossing rule."""
import math

import pytest
import torch

from spikeacc.neurons import single_spike
from spikeacc.neurons.single_spike import (
    SingleSpikeLIF, decay_from_tau, double_cumsum, first_spike, leaky_integrate, readout_logits,
    sequential_single_spike, single_spike_lif)

FORMS = ("matmul", "conv", "chunked", "auto", "loop")
DT = torch.float64


def loop_membrane(current, beta):
    v_mem, out = torch.zeros_like(current[0]), []
    for current_t in current:
        v_mem = beta * v_mem + current_t
        out.append(v_mem)
    return torch.stack(out)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("T", [1, 5, 8, 37, 300])
def test_membrane_forms_equal_loop(form, T):
    gen = torch.Generator().manual_seed(T)
    current = torch.randn(T, 3, 4, 2, generator=gen, dtype=DT)
    for beta in (torch.tensor(0.9, dtype=DT), torch.rand(4, 1, generator=gen, dtype=DT)):
        torch.testing.assert_close(leaky_integrate(current, beta, form), loop_membrane(current, beta))


def test_auto_form_takes_the_loop_for_per_neuron_decays_on_cpu_only():
    # results/single_spike.md, "Membrane forms": a batched product of M [T, T] matrices loses to the loop on CPU
    assert [single_spike.auto_form(T) for T in (16, 64, 65, 2048)] == ["matmul", "matmul", "chunked", "chunked"]
    assert {single_spike.auto_form(T, per_neuron=True) for T in (16, 2048)} == {"loop"}
    assert single_spike.auto_form(16, True, "cuda") == "matmul"
    assert single_spike.auto_form(2048, True, torch.device("cuda")) == "chunked"


@pytest.mark.parametrize("T", [10, 100])  # one product below AUTO_MATMUL_MAX_T, cumsums above
def test_double_cumsum_and_adjoint(T):
    x, y = torch.randn(T, 3, 2, dtype=DT), torch.randn(T, 3, 2, dtype=DT)
    want = torch.stack([sum((t - k + 1) * x[k] for k in range(t + 1)) for t in range(T)])
    torch.testing.assert_close(double_cumsum(x), want)
    torch.testing.assert_close((double_cumsum(x) * y).sum(), (x * double_cumsum(y, transpose=True)).sum())


def grads_of(fn, current, beta, weights):
    current = current.clone().requires_grad_(True)
    beta = beta.clone().requires_grad_(True)
    spikes, v_mem = fn(current, beta)
    loss = (spikes * weights[0]).sum() + (v_mem * weights[1]).sum()
    loss.backward()
    return spikes.detach(), v_mem.detach(), current.grad, beta.grad


def test_sample_groups_give_the_same_spikes_membrane_and_gradients(monkeypatch):
    # float64; the groups only split the batch, so values match to rounding of the beta sum.
    gen = torch.Generator().manual_seed(3)
    current = 0.3 * torch.rand(100, 7, 4, 3, generator=gen, dtype=DT)  # [T, B, C, N], T > 64
    beta = 0.7 + 0.3 * torch.rand(4, 3, generator=gen, dtype=DT)
    weights = [torch.randn(current.shape, generator=gen, dtype=DT) for _ in range(2)]
    layer = lambda cur, b: single_spike_lif(cur, b, 1.0, 10.0, "chunked")  # noqa: E731  (a form that groups)
    whole = grads_of(layer, current, beta, weights)
    monkeypatch.setattr(single_spike, "GROUP_ELEMENTS", 2 * 100 * 12)  # groups of 2 samples: 2, 2, 2, 1
    grouped = grads_of(layer, current, beta, weights)
    slow = grads_of(lambda cur, b: sequential_single_spike(cur, b, 1.0, 10.0), current, beta, weights)
    assert 0 < whole[0].sum() < whole[0][0].numel()
    for got, want, ref in zip(grouped, whole, slow):
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape", [(40, 6, 7), (25, 2, 3, 4, 4), (90, 3, 5), (140, 2, 3)])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_vectorised_equals_sequential(form, shape, per_neuron):
    gen = torch.Generator().manual_seed(sum(shape))
    neuron_shape = shape[2:]
    gain = 0.4 * torch.rand(neuron_shape, generator=gen, dtype=DT)
    gain.view(-1)[0] = 0.0  # a neuron that never fires
    current = gain * torch.rand(shape, generator=gen, dtype=DT) - 0.02  # [T, B, ...]
    beta = (0.7 + 0.3 * torch.rand(neuron_shape, generator=gen, dtype=DT) if per_neuron
            else torch.tensor(decay_from_tau(10.0), dtype=DT))
    weights = [torch.randn(shape, generator=gen, dtype=DT) for _ in range(2)]

    def vectorised(cur, b):
        v_mem = leaky_integrate(cur, b, form)
        return first_spike(v_mem, 1.0, 10.0), v_mem

    fast = grads_of(vectorised, current, beta, weights)
    slow = grads_of(lambda cur, b: sequential_single_spike(cur, b, 1.0, 10.0), current, beta, weights)
    spikes = fast[0]
    assert 0 < spikes.sum() < spikes[0].numel()  # some neurons fire, some do not
    assert spikes.sum(0).max() == 1
    for got, want in zip(fast, slow):
        torch.testing.assert_close(got, want)


def run_both(current, beta=0.5, threshold=1.0):
    current = torch.tensor(current, dtype=DT).view(-1, 1, 1)  # [T, 1, 1]
    v_mem = leaky_integrate(current, beta)
    fast = first_spike(v_mem, threshold, 10.0).flatten()
    slow = sequential_single_spike(current, beta, threshold, 10.0)[0].flatten()
    torch.testing.assert_close(fast, slow)
    return fast.tolist()


def test_never_spikes():
    assert run_both([0.1, 0.2, -0.5, 0.4]) == [0, 0, 0, 0]


def test_spike_at_first_step():
    assert run_both([1.5, 0.0, 0.0]) == [1, 0, 0]


def test_spike_at_last_step():
    assert run_both([0.0, 0.0, 0.0, 1.2]) == [0, 0, 0, 1]


def test_tie_at_threshold_fires():
    # beta = 0.5: V = [0.5, 0.25 + 0.75] = [0.5, 1.0] exactly
    assert run_both([0.5, 0.75, 0.0]) == [0, 1, 0]
    assert run_both([1.0]) == [1]


def test_repeated_crossings_fire_once():
    # crosses at t=1, falls below, crosses again at t=3 and stays above
    assert run_both([1.2, -2.0, 0.0, 3.0, 1.0]) == [1, 0, 0, 0, 0]


def test_straight_through_gradient_reaches_earlier_steps():
    current = torch.tensor([0.2, 1.5, 0.1], dtype=DT).view(-1, 1, 1).requires_grad_(True)
    first_spike(leaky_integrate(current, 0.5), 1.0, 10.0)[1].sum().backward()
    # dL/dS[1] = 1 -> dz[1] -> S~[0], S~[1] (weights 2, 1) -> V[0], V[1] -> I[0], I[1]
    assert current.grad[0] != 0 and current.grad[1] != 0 and current.grad[2] == 0


def test_layer_trainable_decay_matches_reference():
    torch.manual_seed(0)
    layer = SingleSpikeLIF(tau=10, trainable_decay=True, neuron_shape=(5,)).double()
    current = 0.3 * torch.rand(30, 4, 5, dtype=DT)
    grads = []
    for run in (layer, layer.reference):
        layer.zero_grad()
        spikes, v_mem = run(current)
        (spikes.sum() + v_mem.pow(2).mean()).backward()
        grads.append(layer.beta_raw.grad.clone())
    assert layer.beta_raw.shape == (5,)
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("reduce", ["max", "sum"])
def test_readout(reduce):
    current = torch.randn(12, 3, 4, dtype=DT)
    beta = decay_from_tau(20.0)
    v_mem = loop_membrane(current, beta)
    want = v_mem.amax(0) if reduce == "max" else v_mem.sum(0)
    torch.testing.assert_close(readout_logits(current, beta, reduce), want)


def test_bad_arguments():
    with pytest.raises(ValueError, match="membrane form"):
        leaky_integrate(torch.zeros(3, 2, 1), 0.5, "fft")
    with pytest.raises(ValueError, match="broadcast"):
        leaky_integrate(torch.zeros(3, 2, 4), torch.ones(3))
    with pytest.raises(ValueError, match="readout"):
        readout_logits(torch.zeros(3, 2, 4), 0.5, "mean")
    with pytest.raises(ValueError, match="neuron_shape"):
        SingleSpikeLIF(trainable_decay=True)
    with pytest.raises(ValueError, match="tau"):
        decay_from_tau(0.0)
    assert math.isclose(decay_from_tau(10.0), math.exp(-0.1))
