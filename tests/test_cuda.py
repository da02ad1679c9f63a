"""Every method gives the same loss and gradients on CUDA as on the CPU (float64,
atol 1e-8: different reduction orders). Skipped on machines without a GPU."""
import copy

import pytest
import torch

from spikeacc import MLP, ConvNet, methods

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("name", methods.names())
@pytest.mark.parametrize("model", ["mlp", "conv"])
def test_cuda_matches_cpu(name, model):
    torch.manual_seed(0)
    net = MLP(64, [32], 10) if model == "mlp" else ConvNet((1, 8, 8), (4, 8), 10)
    net = net.double()
    x = torch.rand(8, *net.sample_shape, dtype=torch.float64)
    y = torch.randint(0, 10, (8,))
    net_gpu = copy.deepcopy(net).cuda()
    method = methods.get(name, T=4)
    loss_cpu, logits_cpu = method.loss_and_grad(net, x, y)
    loss_gpu, logits_gpu = method.loss_and_grad(net_gpu, x.cuda(), y.cuda())
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=0, atol=1e-8)
    torch.testing.assert_close(logits_gpu.cpu(), logits_cpu, rtol=0, atol=1e-8)
    for p_cpu, p_gpu in zip(net.parameters(), net_gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=0, atol=1e-8)


@pytest.mark.parametrize("T", [16, 130])  # matmul forms; chunked form in sample groups
def test_single_spike_layer_on_cuda_equals_sequential_on_cpu(T, monkeypatch):
    from spikeacc.neurons import single_spike
    monkeypatch.setattr(single_spike, "GROUP_ELEMENTS", 2 * T * 5)  # groups of two samples
    gen = torch.Generator().manual_seed(T)
    current = 0.3 * torch.rand(T, 5, 5, generator=gen, dtype=torch.float64)  # [T, B, N]
    weights = torch.randn(2, T, 5, 5, generator=gen, dtype=torch.float64)
    results = []
    for device, layer in (("cuda", single_spike.single_spike_lif), ("cpu", single_spike.sequential_single_spike)):
        x = current.to(device).requires_grad_(True)
        spikes, v_mem = layer(x, 0.9, 1.0, 10.0)
        ((spikes * weights[0].to(device)).sum() + (v_mem * weights[1].to(device)).sum()).backward()
        results.append([spikes.detach().cpu(), v_mem.detach().cpu(), x.grad.cpu()])
    assert results[1][0].sum() > 0
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-8)


def test_blocks_on_cuda_equal_sequential_on_cpu():
    from spikeacc.neurons.blocks import blocks_lif, sequential_refractory_lif
    gen = torch.Generator().manual_seed(0)
    current = 0.8 * torch.rand(40, 3, 6, generator=gen, dtype=torch.float64)
    results = []
    for device, neuron in (("cuda", blocks_lif), ("cpu", sequential_refractory_lif)):
        x = current.to(device).requires_grad_(True)
        spikes, v_mem = neuron(x, 0.9, 1.0, 4)
        (spikes.sum() + v_mem.sum()).backward()
        results.append([spikes.detach().cpu(), v_mem.detach().cpu(), x.grad.cpu()])
    assert results[1][0].sum(0).max() > 1
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-8)
