"""Blocks (refractory LIF by blocks of R + 1 steps) == the sequential refractory LIF."""
import pytest
import torch

from spikeacc.neurons.blocks import RefractoryLIF, blocks_lif, sequential_refractory_lif

DT = torch.float64


@pytest.mark.parametrize("refractory", [0, 1, 2, 4, 7])
@pytest.mark.parametrize("T", [1, 6, 23, 60])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_blocks_equal_sequential(refractory, T, per_neuron):
    gen = torch.Generator().manual_seed(100 * refractory + T)
    gain = 0.8 * torch.rand(5, generator=gen, dtype=DT)
    current = gain * torch.rand(T, 4, 5, generator=gen, dtype=DT) - 0.05  # [T, B, N]
    beta = 0.6 + 0.4 * torch.rand(5, generator=gen, dtype=DT) if per_neuron else 0.9
    spikes, v_mem = blocks_lif(current, beta, 1.0, refractory)
    ref_spikes, ref_v = sequential_refractory_lif(current, beta, 1.0, refractory)
    torch.testing.assert_close(spikes, ref_spikes, rtol=0, atol=0)
    torch.testing.assert_close(v_mem, ref_v)
    if T >= 23:
        assert spikes.sum(0).max() > 1  # multi-spike


@pytest.mark.parametrize("refractory", [0, 1, 4])
@pytest.mark.parametrize("T", [7, 40])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_blocks_gradients_equal_sequential(refractory, T, per_neuron):
    # float64; tolerance 1e-10 absolute: both sides are the same sums in another order.
    gen = torch.Generator().manual_seed(7 * refractory + T)
    current = (0.8 * torch.rand(T, 3, 6, generator=gen, dtype=DT) - 0.05).requires_grad_(True)
    beta = 0.6 + 0.4 * torch.rand(6, generator=gen, dtype=DT) if per_neuron else 0.9
    weight_spikes, weight_v = torch.randn(2, T, 3, 6, generator=gen, dtype=DT)
    grads = []
    for neuron in (blocks_lif, sequential_refractory_lif):
        spikes, v_mem = neuron(current, beta, 1.0, refractory)
        loss = (weight_spikes * spikes).sum() + (weight_v * v_mem).sum()
        grads.append(torch.autograd.grad(loss, current)[0])
        assert spikes.sum(0).max() >= 1
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-10)
    assert grads[0].abs().sum() > 0


def test_refractory_pattern_under_strong_input():
    current = torch.full((12, 1, 1), 5.0, dtype=DT)
    for refractory in (0, 2, 3):
        spikes, v_mem = blocks_lif(current, 0.9, 1.0, refractory)
        expected = [1.0 if t % (refractory + 1) == 0 else 0.0 for t in range(12)]
        assert spikes.flatten().tolist() == expected
        assert sequential_refractory_lif(current, 0.9, 1.0, refractory)[0].flatten().tolist() == expected
        assert v_mem.flatten().tolist() == [5.0 if e else 0.0 for e in expected]


def test_membrane_carries_across_blocks_and_reset_is_zero():
    # R = 1 (blocks of 2); beta = 0.5, threshold 1: v = 0.5, 0.75, 0.875, 0.9375 -> no spike,
    # the membrane must carry over block boundaries; then 1.0 -> spike at t = 4 (a tie),
    # t = 5 refractory, t = 6 integrates from 0.
    current = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.53125, 9.0, 0.25], dtype=DT).view(-1, 1, 1)
    spikes, v_mem = blocks_lif(current, 0.5, 1.0, 1)
    assert spikes.flatten().tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert v_mem.flatten().tolist() == [0.5, 0.75, 0.875, 0.9375, 1.0, 0.0, 0.25]


def test_conv_shape_and_gradients_flow():
    torch.manual_seed(0)
    layer = RefractoryLIF(tau=5, refractory=2)
    current = (0.6 * torch.rand(17, 2, 3, 4, 4)).requires_grad_(True)  # [T, B, C, H, W]
    spikes, _ = layer(current)
    ref_spikes, _ = layer.reference(current)
    assert torch.equal(spikes, ref_spikes)
    spikes.sum().backward()
    assert torch.isfinite(current.grad).all() and current.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="refractory"):
        blocks_lif(torch.zeros(3, 1, 1), 0.9, 1.0, -1)
    with pytest.raises(ValueError, match="threshold"):
        RefractoryLIF(threshold=0.0)
