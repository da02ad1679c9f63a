"""Blocks (refractory LIF by blocks of L <= R + 1 steps) == the sequential refractory LIF:
spikes exactly, membrane and every gradient (current and decay) in float64 to 1e-10."""
import pytest
import torch

from spikeacc.neurons.blocks import RefractoryLIF, blocks_lif, sequential_refractory_lif

DT = torch.float64


@pytest.mark.parametrize("refractory, block_length", [(0, None), (1, None), (2, None), (4, None), (7, None),
                                                     (4, 2), (7, 3), (3, 1)])
@pytest.mark.parametrize("T", [1, 6, 23, 60])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_blocks_equal_sequential(refractory, block_length, T, per_neuron):
    gen = torch.Generator().manual_seed(100 * refractory + T)
    gain = 0.8 * torch.rand(5, generator=gen, dtype=DT)
    current = gain * torch.rand(T, 4, 5, generator=gen, dtype=DT) - 0.05  # [T, B, N]
    beta = 0.6 + 0.4 * torch.rand(5, generator=gen, dtype=DT) if per_neuron else 0.9
    spikes, v_mem = blocks_lif(current, beta, 1.0, refractory, block_length=block_length)
    ref_spikes, ref_v = sequential_refractory_lif(current, beta, 1.0, refractory)
    torch.testing.assert_close(spikes, ref_spikes, rtol=0, atol=0)
    torch.testing.assert_close(v_mem, ref_v)
    if T >= 23:
        assert spikes.sum(0).max() > 1  # multi-spike


@pytest.mark.parametrize("refractory, block_length", [(0, None), (1, None), (4, None), (4, 2), (5, 1)])
@pytest.mark.parametrize("T", [7, 40])
@pytest.mark.parametrize("per_neuron", [False, True])
def test_blocks_gradients_equal_sequential(refractory, block_length, T, per_neuron):
    # float64; tolerance 1e-10 absolute: both sides are the same sums in another order.
    gen = torch.Generator().manual_seed(7 * refractory + T)
    current = (0.8 * torch.rand(T, 3, 6, generator=gen, dtype=DT) - 0.05).requires_grad_(True)
    beta = (0.6 + 0.4 * torch.rand(6 if per_neuron else 1, generator=gen, dtype=DT)).requires_grad_(True)
    weight_spikes, weight_v = torch.randn(2, T, 3, 6, generator=gen, dtype=DT)
    grads = []
    runs = (lambda: blocks_lif(current, beta, 1.0, refractory, block_length=block_length),
            lambda: sequential_refractory_lif(current, beta, 1.0, refractory))
    for run in runs:
        spikes, v_mem = run()
        loss = (weight_spikes * spikes).sum() + (weight_v * v_mem).sum()
        grads.append(torch.autograd.grad(loss, (current, beta)))
        assert spikes.sum(0).max() >= 1
    for fast, slow in zip(*grads):
        torch.testing.assert_close(fast, slow, rtol=0, atol=1e-10)
        assert fast.abs().sum() > 0


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


def test_short_blocks_carry_refractory_steps_across_several_blocks():
    # R = 5 in blocks of 2: a spike at t = 1 silences t = 2..6, three blocks.
    current = torch.tensor([0.5, 0.6, 9.0, 9.0, 9.0, 9.0, 9.0, 1.0], dtype=DT).view(-1, 1, 1)
    spikes, v_mem = blocks_lif(current, 1.0, 1.0, 5, block_length=2)
    assert spikes.flatten().tolist() == [0, 1, 0, 0, 0, 0, 0, 1]
    assert v_mem.flatten().tolist() == [0.5, 1.1, 0, 0, 0, 0, 0, 1.0]


def test_trainable_decay_layer_trains_its_beta_per_neuron():
    layer = RefractoryLIF(tau=5, refractory=2, trainable_decay=True, neuron_shape=(4,)).double()
    current = 0.7 * torch.rand(12, 3, 4, dtype=DT)
    spikes, _ = layer(current)
    assert torch.equal(spikes, layer.reference(current)[0])
    spikes.sum().backward()
    assert layer.beta_raw.shape == (4,) and layer.beta_raw.grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="refractory"):
        blocks_lif(torch.zeros(3, 1, 1), 0.9, 1.0, -1)
    with pytest.raises(ValueError, match="threshold"):
        RefractoryLIF(threshold=0.0)
    with pytest.raises(ValueError, match="block length must be an integer from 1 to refractory \\+ 1 = 3"):
        RefractoryLIF(refractory=2, block_length=4)
    with pytest.raises(ValueError, match="neuron_shape"):
        RefractoryLIF(trainable_decay=True)
