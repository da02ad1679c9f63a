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
